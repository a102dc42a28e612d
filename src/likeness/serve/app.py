"""The service-mode web app: many users, each reaching only their own workspace.

`create_server_app` composes (step by step):

1. the server database (accounts, sessions, queue) and settings;
2. the tenant registry: one workspace per user, resolved by `auth.require_tenant` before any
   route runs;
3. the edge: Host/Origin guard and security headers, then the audit trail;
4. the routes: sign-in, the photoshoot pages and API, the job WebSocket, and the review app's
   own routers with its `get_db`/`get_state` dependencies bound to the signed-in user's
   workspace (the review app is reused as it is, not copied);
5. the workers, started with the app and stopped with it (jobs left running go back to the
   queue at the next start).

Example:
    app = create_server_app(Path("/srv/likeness"))
    uvicorn.run(app, host="0.0.0.0", port=8443, ssl_certfile=..., ssl_keyfile=...)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.templating import Jinja2Templates
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape

from likeness.review import api as review_api
from likeness.review import deps as review_deps
from likeness.review import pages as review_pages
from likeness.review.app import _load_static as review_static
from likeness.review.deps import ReviewState
from likeness.review.security import is_loopback
from likeness.serve import auth, pages, studio
from likeness.serve.auth import CurrentTenant, ServerState
from likeness.serve.edge import AuditTrail, EdgeGuard
from likeness.serve.serverdb import ServerDb
from likeness.serve.settings import ServeSettings, load_serve_settings
from likeness.serve.tenants import TenantRegistry
from likeness.serve.work import RUNNERS, Runner, Services, default_train_runner
from likeness.serve.worker import Workers, start_workers

_HERE = Path(__file__).parent
_REVIEW_TEMPLATES = _HERE.parent / "review" / "templates"


def create_server_app(
    root: Path,
    *,
    settings: ServeSettings | None = None,
    services: Services | None = None,
    runners: Mapping[str, Runner] = RUNNERS,
    bind_host: str = "127.0.0.1",
    workers: bool = True,
) -> FastAPI:
    """The app for the server folder `root` (made by `likeness serve user add`).

    `settings` default to `root/serve.toml`. `services` (engines, scoring instruments,
    trainer) run jobs in threads of this process instead of worker processes; `workers=False`
    starts none (the queue fills, nothing runs it: for a separate worker process or tests).
    `bind_host` is the address the server listens on: on loopback, only loopback Host names
    are answered unless `serve.hosts` names others.
    """
    # 1. The server's own state.
    root = Path(root).resolve()
    settings = settings or load_serve_settings(root)
    db = ServerDb(root)
    templates = _templates()
    review_files = review_static()
    tenants = TenantRegistry(root, settings.quota, templates, review_files)
    train = services.train if services is not None else default_train_runner()
    state = ServerState(
        root=root,
        settings=settings,
        db=db,
        tenants=tenants,
        templates=templates,
        static=review_files,
        train_available=train is not None and "train" in runners,
    )

    # 2. Workers live as long as the app.
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running: Workers | None = None
        if workers:
            running = start_workers(root, settings, services=services, runners=runners)
        try:
            yield
        finally:
            if running is not None:
                running.stop()
            tenants.close()
            db.close()

    app = FastAPI(
        title="Likeness studio",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.serve = state
    app.state.assets = pages.load_assets()
    # 3. The edge: the guard outermost, then the audit trail.
    app.add_middleware(AuditTrail)
    app.add_middleware(
        EdgeGuard,
        hosts=settings.serve.hosts,
        loopback_only=is_loopback(bind_host),
        allowed_origins=settings.serve.allowed_origins,
        hsts=settings.serve.cookie_secure,
    )
    app.add_exception_handler(auth.NotSignedIn, auth.not_signed_in)  # type: ignore[arg-type]
    # 4. Routes. Public: sign-in, assets, health. Everything else resolves the user first.
    app.include_router(auth.router)
    app.include_router(pages.public)
    app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
    app.include_router(pages.router)
    app.include_router(studio.router)
    signed_in = [Depends(auth.require_tenant)]
    app.include_router(review_pages.router, dependencies=signed_in)
    app.include_router(review_api.router, dependencies=signed_in)
    app.dependency_overrides[review_deps.get_db] = studio.tenant_db
    app.dependency_overrides[review_deps.get_state] = tenant_review_state
    return app


def tenant_review_state(tenant: CurrentTenant) -> ReviewState:
    """The review app's state for the signed-in user: their workspace, metrics, thumbnails."""
    return tenant.review


def _healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


def _templates() -> Jinja2Templates:
    """The server's templates first; the review app's after them, also as `review/...` so
    the server's `base.html` can extend the review app's own."""
    review = FileSystemLoader(str(_REVIEW_TEMPLATES))
    env = Environment(
        loader=ChoiceLoader(
            [FileSystemLoader(str(_HERE / "templates")), PrefixLoader({"review": review}), review]
        ),
        autoescape=select_autoescape(["html"]),
    )
    return Jinja2Templates(env=env, context_processors=[auth.page_context])
