"""Front-end bundle: htmx and its websocket extension from npm, plus Hookbin's own script.

``npm install`` puts the packages in ``node_modules/``; Flask-Assets concatenates and minifies
them into ``static/gen/hookbin.js``. ``hookbin serve`` builds the bundle once before the workers
start so that they never race to write it.
"""

from __future__ import annotations

from flask import Flask
from flask_assets import Bundle, Environment

from app.config import PROJECT_ROOT

NODE_MODULES = PROJECT_ROOT / "node_modules"

JS_SOURCES = [
    "htmx.org/dist/htmx.min.js",
    "htmx-ext-ws/dist/ws.js",
    "js/hookbin.js",
]


def make_environment(app: Flask) -> Environment:
    """The Flask-Assets environment with Hookbin's bundles registered."""
    env = Environment(app)
    env.load_path = [str(PROJECT_ROOT / "static"), str(NODE_MODULES)]
    env.url_expire = True
    env.register("js_all", Bundle(*JS_SOURCES, filters="rjsmin", output="gen/hookbin.js"))
    env.register("css_all", Bundle("css/hookbin.css", output="gen/hookbin.css"))
    return env


def init_app(app: Flask) -> None:
    """Attach the asset environment to ``app``."""
    make_environment(app)


def build(app: Flask) -> None:
    """Write the bundles to ``static/gen`` (run before forking workers)."""
    env: Environment = app.jinja_env.assets_environment  # type: ignore[attr-defined]
    for name in ("js_all", "css_all"):
        env[name].build()
