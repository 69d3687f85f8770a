"""The status page: a front door like the SCF triggers and the CLI, serving server-rendered HTML (with one small
script and one stylesheet shipped in ``static/``) through API Gateway and ``jobwatch serve``. It reads and acts
through :class:`~jobwatch.app.App` only. Layout: :mod:`.routes` (requests, sessions, actions), :mod:`.pages`
(HTML), :mod:`.timeline` (the SVG of one job), :mod:`.auth` (signed cookie and CSRF token)."""

from jobwatch.web.routes import WebRequest, WebResponse, handle, ui_subpath

__all__ = ["WebRequest", "WebResponse", "handle", "ui_subpath"]
