"""The web dashboard's reads (:mod:`.data`, :mod:`.analytics`), sessions, pages and assets.

The HTTP routes live in :mod:`microseg.api.routers.dashboard`."""
