"""``nbplugins serve``: Serve notebooks into users' homes when an ELN (openBIS) links to them."""

from __future__ import annotations

import click


def _size(text: str) -> int:
    """``10M``, ``512k``, ``1048576`` -> bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a size such as 10M, 512k or 1048576", param_hint="--max-body") from None


def serve(port: int, bind: str, cert: str | None, key: str | None, base_path: str | None,
          cors_origin: tuple[str, ...], max_body: str, homes: str | None, hub_api: str | None, openbis: str | None,
          oidc_issuer: str | None, oidc_claim: str, token_file: str | None, templates: str | None,
          hub_url: str | None, auth_ttl: float, auth_timeout: float) -> None:
    """Create notebooks in users' homes for openBIS's ELN and other portals (POST ?token&folder&filename&test).

    One home backend (--homes or --hub-api) and one auth backend (--openbis, --oidc-issuer or
    --token-file). The hub backend's service token comes from NBPLUGINS_HUB_API_TOKEN,
    JUPYTERHUB_API_TOKEN or [serve] hub_api_token, never from the command line.
    """
    from nbplugins import serve as service

    size = _size(max_body)
    if size < 1:
        raise click.BadParameter("must be at least 1 byte", param_hint="--max-body")
    options = service.Options(port=port, bind=bind, cert=cert, key=key, base_path=base_path,
                              cors_origins=cors_origin, max_body=size, homes=homes, hub_api=hub_api, openbis=openbis,
                              oidc_issuer=oidc_issuer, oidc_claim=oidc_claim, token_file=token_file,
                              templates=templates, hub_url=hub_url, auth_ttl=auth_ttl, auth_timeout=auth_timeout)
    service.run(options)


_options = [
    click.option("--port", type=click.IntRange(0, 65535), default=8123, show_default=True),
    click.option("--bind", default="127.0.0.1", show_default=True, help="Address to listen on."),
    click.option("--cert", type=click.Path(dir_okay=False), default=None, help="TLS certificate (PEM)."),
    click.option("--key", type=click.Path(dir_okay=False), default=None, help="TLS private key (PEM)."),
    click.option("--base-path", default=None, help="Also answer under this path (besides / and the ELN's)."),
    click.option("--cors-origin", multiple=True, metavar="ORIGIN",
                 help="Origin allowed to call from a browser (repeatable; default: none)."),
    click.option("--max-body", default="10M", show_default=True, help="Largest body accepted (413 above)."),
    click.option("--homes", default=None, metavar="'/home/{user}'", help="Local homes backend: the home template."),
    click.option("--hub-api", default=None, metavar="URL", help="JupyterHub backend: the hub's URL."),
    click.option("--openbis", default=None, metavar="URL", help="openBIS auth: the openBIS server URL."),
    click.option("--oidc-issuer", default=None, metavar="URL", help="OIDC auth: the issuer URL."),
    click.option("--oidc-claim", default="sub", show_default=True, help="OIDC auth: the userinfo claim naming the user."),
    click.option("--token-file", default=None, metavar="PATH", help="Static auth: a file of 'token user' lines."),
    click.option("--templates", default=None, metavar="DIR", help="Template catalogue searched first."),
    click.option("--hub-url", default=None, metavar="URL", help="Hub URL for the 'url' of template answers."),
    click.option("--auth-ttl", type=click.FloatRange(min=0), default=30.0, show_default=True,
                 help="Seconds a token's user is remembered (0: ask every time)."),
    click.option("--auth-timeout", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
                 help="Seconds one token lookup may take."),
]
for _option in reversed(_options):
    serve = _option(serve)

group = click.command(name="serve")(serve)
