"""The operator console: a local web page served by the daemon.

:mod:`~pdimport.console.users` keeps the local accounts,
:mod:`~pdimport.console.auth` the sessions, :mod:`~pdimport.console.views`
shapes the journal for people, :mod:`~pdimport.console.app` is the Starlette
application and :mod:`~pdimport.console.server` runs it under uvicorn in a
thread of its own, so looking at the console never slows a read.
"""
