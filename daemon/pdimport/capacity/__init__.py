"""Capacity planning: ``pdimport bench`` answers "how many discs per hour,
with how many drives, and what limits it?".

The flow, one module each:

* :mod:`~pdimport.capacity.mix` — the TOML mix file: which kinds of referral
  disc, in which shares (a default mix ships as ``default-mix.toml``);
* :mod:`~pdimport.capacity.generator` — synthetic media that look like
  referral discs (CT/MR/CR/US, thin-slice CT, multi-study, RT sets,
  compressed variants, Other Content, broken files), as ISO images;
* :mod:`~pdimport.capacity.drivemodel` and :mod:`~pdimport.capacity.drive` —
  the optical drive model, served as a real block device (FUSE + loop);
* :mod:`~pdimport.capacity.runner` — the real daemon under test, fed by the
  emulated drives, delivering to a receiver;
* :mod:`~pdimport.capacity.sampler` — CPU, disk and link use over time;
* :mod:`~pdimport.capacity.timing` — the time per disc split into stages,
  from the journal and the audit trail the run leaves;
* :mod:`~pdimport.capacity.projection` — the bottleneck and the projection
  for 1–8 drives from the measured stage rates;
* :mod:`~pdimport.capacity.report` and :mod:`~pdimport.capacity.plots` —
  ``report.md``, ``report.json`` and the PNG plots.
"""
