"""Colab's custom widget manager switch (colabtools ``google/colab/output/_widgets.py``).

``enable_custom_widget_manager`` registers a hook on the shell's display publisher that adds
``{"application/vnd.jupyter.widget-view+json": {"colab": {"custom_widget_manager": {"url": ...}}}}`` to the metadata
of every message carrying a widget view. Only ``display()`` goes through the display publisher: a widget returned
as a cell's last expression (an ``execute_result``) goes out without it, which is why Colab may not render it.
anywidget reads ``_installed_url``.
"""

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_widget_manager_url = "https://ssl.gstatic.com/colaboratory-static/widgets/colab-cdn-widget-manager/standin/manager.min.js"
_installed_url = None
_hooked = False


def _widget_display_hook(msg):
    if not _installed_url:
        return msg
    content = msg.get("content", {})
    if content and _WIDGET_MIME in content.get("data", {}):
        content.setdefault("metadata", {})[_WIDGET_MIME] = {"colab": {"custom_widget_manager": {"url": _installed_url}}}
    return msg


def _install_custom_widget_manager(url):
    global _installed_url, _hooked
    from IPython import get_ipython

    shell = get_ipython()
    if shell is not None and not _hooked and hasattr(shell.display_pub, "register_hook"):
        shell.display_pub.register_hook(_widget_display_hook)
        _hooked = True
    _installed_url = url


def enable_custom_widget_manager():
    _install_custom_widget_manager(_widget_manager_url)


def disable_custom_widget_manager():
    global _installed_url
    _installed_url = None
