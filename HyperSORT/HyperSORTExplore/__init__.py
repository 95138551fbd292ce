"""The web explorer (``hypersort explore``): the latent map and live overlays in a browser.

A front end like the Slicer module, on the same Qt-free Logic
(:class:`HyperSORTModule.CoreLogic.HyperSORTCoreLogic`): trame serves a page, trame-slicer renders
Slicer's own slice views of a real MRML scene (slicer-core) on the server and streams them as images.

* :mod:`HyperSORTExplore.Access`: who may connect (loopback by default, an access token otherwise)
  and which files the server may read and write;
* :mod:`HyperSORTExplore.Scheduling`: debounce timers on the server's asyncio event loop;
* :mod:`HyperSORTExplore.ExploreLogic`: one session (scan, latent map, accept, review), free of trame;
* :mod:`HyperSORTExplore.App`: the trame page and its wiring.

Nothing here is imported by the library or by the Slicer module; trame and trame-slicer are the
optional ``explore`` extra (``pip install -e ".[explore]"``).
"""
