"""MambaMIM Segmenter in the browser: a thin trame-slicer front end over ``MambaMIMSegmenterLib``.

Started by ``mambamim web`` (``pip install -e ".[web]"``). Real Slicer views (slice and 3-D, rendered
offscreen on the server) stream to the page; scans and results never leave the server except as the
user's own downloads.
"""
