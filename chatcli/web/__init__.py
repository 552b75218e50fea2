"""The browser front end: static files served by ``chatcli.transports.web``.

``static/`` holds the page (HTML, JavaScript, CSS) exactly as it is served: no build
step, nothing fetched from the internet; pyproject.toml ships it as package data.
"""
