"""Cloud PDI: a patient's images that arrive over a cloud repository instead
of a disc (the MHLW standard HS043 as publicly described).

The sender puts a community ID, a document ID and a password into a health
information token (HI-TOKEN, ISO/TS 22691), encrypts the package into chunks,
uploads them to a FHIR repository and sends the token, encrypted to this
appliance's certificate, by another route (S/MIME mail, a QR code on paper).
Here the token is decrypted (:mod:`~pdimport.cloudpdi.token`), the document
found and its chunks fetched (:mod:`~pdimport.cloudpdi.fhir`), decrypted,
checked and reassembled (:mod:`~pdimport.cloudpdi.package`), and the package
imported as a Net PDI medium through the one job pipeline
(:mod:`~pdimport.cloudpdi.channel`).

The HS043 text itself is not public: each of the three steps is a plug-point
named by a profile file (:mod:`~pdimport.cloudpdi.profile`), and the
packaged ``reference.toml`` implements the assumptions the README lists.
"""
