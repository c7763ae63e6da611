"""Streaming multipart uploads: one pipeline (:mod:`.pipeline`), one upload
directory (:mod:`.storage`), safe names (:mod:`.names`) and the ``/upFile``
and download views (:mod:`.views`)."""
