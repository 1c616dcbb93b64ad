"""A stand-in for ``google.colab``, so the Colab paths of ASiT run in tests (real Colab is not reachable from CI).

It imitates, from colabtools' own code, only the behaviours ASiT meets; each module says which:

* ``google.colab`` is imported when the kernel starts (Colab's kernel does it, and code tests
  ``"google.colab" in sys.modules``); importing the package imports ``drive``, ``files``, ``output``, ``userdata``.
* :mod:`.drive`: ``mount(mountpoint)`` makes ``<mountpoint>/MyDrive`` (here backed by ``$COLAB_STANDIN_DRIVE``, a
  folder that outlives "runtimes" as Drive does) and prints "Mounted at ...".
* :mod:`.files`: ``upload(target_dir="")`` asks the browser through ``output.eval_js`` for the picked files and
  saves a copy of each into the working folder (Colab's ``/content``), printing "Saving X to X"; it returns
  ``{name: bytes}``, ``{}`` when the picker is cancelled.
* :mod:`.userdata`: ``get(key)`` returns a secret, or raises ``SecretNotFoundError`` / ``NotebookAccessError``.
* :mod:`.output`: ``enable_custom_widget_manager()`` adds Colab's widget-manager metadata to every widget shown
  through ``display()`` (a display-publisher hook: a cell's bare last expression does not get it);
  ``serve_kernel_port_as_window`` / ``serve_kernel_port_as_iframe`` expose a kernel port through a proxy, and
  ``eval_js("google.colab.kernel.proxyPort(N)")`` returns the proxy's URL. Every exposure is recorded in
  ``output.exposed``.

The "browser" is a queue tests fill: :func:`google.colab.files.will_pick`, or ``$COLAB_STANDIN_PICK`` (paths
separated by ``os.pathsep``; empty: cancel) for a notebook kernel. The proxy serves port N under
``http://127.0.0.1:<proxy>/port/N/``: a path prefix, stricter than Colab's own origin-per-port proxy, so a page
that uses absolute paths fails here. It is not Colab; it is how these paths stay tested.
"""

from . import drive, files, output, userdata  # noqa: F401  (Colab's package imports its modules the same way)
