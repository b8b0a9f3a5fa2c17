"""The authorization server's HTTP side: the SDK's OAuth routes (authorize, token, registration, revocation), the
metadata documents clients discover it by, and the consent page where the operator, signed in with the access
token, allows or denies each client."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.routes import REVOCATION_PATH, build_metadata, cors_middleware, create_auth_routes
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..auth.provider import CONSENT_PATH, ConsentRequest, InboxAuthProvider
from ..auth.scopes import DESCRIPTIONS, READ, SCOPES, WRITE

AUTHORIZATION_SERVER_METADATA = "/.well-known/oauth-authorization-server"
PROTECTED_RESOURCE_METADATA = "/.well-known/oauth-protected-resource"
CSRF_COOKIE = "stripe_inbox_consent_csrf"

SignedIn = Callable[[Request], bool]
# An origin issuer stays without a trailing slash: clients compare it as a string with the `iss` they get back.
URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))


def never_signed_in(request: Request) -> bool:
    """Until the dashboard's session is wired in here, the consent form always asks for the access token."""
    return False


def oauth_routes(provider: InboxAuthProvider, access_token: str, signed_in: SignedIn = never_signed_in) -> list[Route]:
    """Routes to mount ahead of /mcp. `signed_in(request)` says whether the request already carries an operator's
    session (the dashboard's); then the consent form does not ask for the token again."""
    issuer = URL.validate_python(provider.issuer)
    registration = ClientRegistrationOptions(enabled=True, valid_scopes=list(SCOPES), default_scopes=list(SCOPES))
    revocation = RevocationOptions(enabled=True)
    routes = [
        route
        for route in create_auth_routes(provider, issuer, None, registration, revocation)
        if route.path not in (AUTHORIZATION_SERVER_METADATA, REVOCATION_PATH)
    ]
    revoke = RequestBodyLimitMiddleware(
        cors_middleware(Revocation(provider).handle, ["POST", "OPTIONS"]), DEFAULT_MAX_REQUEST_BODY_SIZE
    )
    routes.append(Route(REVOCATION_PATH, revoke, methods=["POST", "OPTIONS"]))

    # The SDK's metadata, with what it leaves out: client ID metadata documents (which the provider resolves),
    # `iss` in every authorization response (RFC 9207), and public clients only (see register_client).
    metadata = build_metadata(issuer, None, registration, revocation)
    metadata.client_id_metadata_document_supported = True
    metadata.authorization_response_iss_parameter_supported = True
    metadata.token_endpoint_auth_methods_supported = ["none"]
    metadata.revocation_endpoint_auth_methods_supported = ["none"]
    routes.append(
        Route(
            AUTHORIZATION_SERVER_METADATA,
            cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        )
    )

    # RFC 9728 puts the resource's metadata at the well-known path followed by the resource's path (/mcp); the
    # bare well-known path answers too, for clients that look there first. Both list the scopes, which the SDK's
    # own copy (derived from required_scopes) would not.
    resource = ProtectedResourceMetadata(
        resource=URL.validate_python(provider.resource),
        authorization_servers=[issuer],
        scopes_supported=list(SCOPES),
        resource_name="Stripe event inbox",
    )
    resource_metadata = cors_middleware(ProtectedResourceMetadataHandler(resource).handle, ["GET", "OPTIONS"])
    for path in (PROTECTED_RESOURCE_METADATA + urlsplit(provider.resource).path, PROTECTED_RESOURCE_METADATA):
        routes.append(Route(path, resource_metadata, methods=["GET", "OPTIONS"]))

    consent = ConsentPage(provider, access_token, signed_in)
    routes.append(Route(CONSENT_PATH, consent.show, methods=["GET"]))
    routes.append(Route(CONSENT_PATH, consent.answer, methods=["POST"]))
    return routes


class Revocation:
    """RFC 7009 token revocation. The SDK's handler wants a `client_secret` field in every request, which public
    clients (all of them here) do not send; this is that handler without the requirement."""

    def __init__(self, provider: InboxAuthProvider) -> None:
        self.provider = provider
        self.authenticator = ClientAuthenticator(provider)

    async def handle(self, request: Request) -> Response:
        try:
            client = await self.authenticator.authenticate_request(request)
        except AuthenticationError as error:
            return JSONResponse({"error": "invalid_client", "error_description": error.message}, status_code=401)
        token = (await request.form()).get("token")
        if not isinstance(token, str) or not token:
            return JSONResponse({"error": "invalid_request", "error_description": "token is required"}, 400)
        found = await self.provider.load_access_token(token) or await self.provider.load_refresh_token(client, token)
        if found is not None and found.client_id == client.client_id:
            await self.provider.revoke_token(found)
        # Unknown or already revoked tokens get the same answer (RFC 7009 §2.2).
        return Response(status_code=200, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


class ConsentPage:
    """Shows who asks for what, and takes the operator's answer. The form carries a CSRF token that must match a
    cookie set with the page, so another site cannot submit it with a signed-in operator's session."""

    def __init__(self, provider: InboxAuthProvider, access_token: str, signed_in: SignedIn) -> None:
        self.provider = provider
        self.access_token = access_token.encode()
        self.signed_in = signed_in
        self.secure_cookie = provider.issuer.startswith("https://")
        self.template = Environment(
            loader=PackageLoader("stripe_inbox.web"), autoescape=select_autoescape(default=True)
        ).get_template("consent.html")

    async def show(self, request: Request) -> Response:
        request_id = request.query_params.get("request", "")
        pending = await self.provider.consent_request(request_id) if request_id else None
        if pending is None:
            return self._gone()
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        if len(csrf) < 32:
            csrf = secrets.token_urlsafe(32)
        response = self._page(request, pending, request_id, csrf)
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            path=CONSENT_PATH,
            httponly=True,
            secure=self.secure_cookie,
            samesite="strict",
        )
        return response

    async def answer(self, request: Request) -> Response:
        form = await request.form()
        request_id = str(form.get("request", ""))
        csrf = str(form.get("csrf", ""))
        cookie = request.cookies.get(CSRF_COOKIE, "")
        origin = request.headers.get("origin")
        if not cookie or not hmac.compare_digest(csrf.encode(), cookie.encode()) or origin not in (None, self._origin):
            return self._message(403, "This form was not sent from the page it belongs to. Go back and reload it.")
        pending = await self.provider.consent_request(request_id) if request_id else None
        if pending is None:
            return self._gone()
        decision = str(form.get("decision", ""))
        if decision not in ("allow", "allow_read", "deny"):
            return self._page(request, pending, request_id, csrf, error="Choose Allow or Deny.", status=400)
        # Denying grants nothing, so it needs no sign-in; allowing does.
        if (
            decision != "deny"
            and not self.signed_in(request)
            and not hmac.compare_digest(str(form.get("token", "")).encode(), self.access_token)
        ):
            return self._page(request, pending, request_id, csrf, error="That is not the access token.", status=401)
        destination = await self.provider.answer(request_id, decision != "deny", read_only=decision == "allow_read")
        if destination is None:
            return self._gone()
        return RedirectResponse(destination, status_code=303, headers=_PAGE_HEADERS)

    @property
    def _origin(self) -> str:
        return self.provider.issuer

    def _page(
        self,
        request: Request,
        pending: ConsentRequest,
        request_id: str,
        csrf: str,
        error: str | None = None,
        status: int = 200,
    ) -> HTMLResponse:
        scopes = pending.params.scopes or [READ]
        html = self.template.render(
            client_name=pending.client_name,
            client_id=pending.client.client_id,
            client_uri=str(pending.client.client_uri) if pending.client.client_uri else None,
            redirect_uri=str(pending.params.redirect_uri),
            scopes=[(scope, DESCRIPTIONS[scope]) for scope in scopes],
            offers_read_only=WRITE in scopes,
            signed_in=self.signed_in(request),
            request_id=request_id,
            csrf=csrf,
            error=error,
            action=CONSENT_PATH,
        )
        return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)

    def _gone(self) -> HTMLResponse:
        return self._message(
            400, "This authorization request is unknown, expired or already answered. Start again from the client."
        )

    def _message(self, status: int, message: str) -> HTMLResponse:
        html = self.template.render(message=message)
        return HTMLResponse(html, status_code=status, headers=_PAGE_HEADERS)


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # No form-action: browsers apply it to the redirect after the form too, and that goes to the client.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with the form.
    "Referrer-Policy": "same-origin",
}
