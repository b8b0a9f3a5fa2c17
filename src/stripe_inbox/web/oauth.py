"""The authorization server's HTTP side: the SDK's OAuth routes (authorize, token, registration, revocation), the
metadata documents clients discover it by, and the consent page (web/consent.py). Registration is open to anyone,
so it is small and rate-limited per address; authorization errors are shown to the person as a page, never sent
to a redirect URI no operator has looked at yet."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler, ProtectedResourceMetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.routes import (
    AUTHORIZATION_PATH,
    REGISTRATION_PATH,
    REVOCATION_PATH,
    build_metadata,
    cors_middleware,
    create_auth_routes,
)
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import Message

from ..auth.provider import CONSENT_PATH, InboxAuthProvider
from ..auth.rate_limit import RateLimiter, retry_after
from ..auth.scopes import SCOPES
from .auth import Access
from .consent import ConsentPage
from .session import DashboardSessions

AUTHORIZATION_SERVER_METADATA = "/.well-known/oauth-authorization-server"
PROTECTED_RESOURCE_METADATA = "/.well-known/oauth-protected-resource"
MAX_REGISTRATION_BYTES = 16 * 1024  # a client's metadata is a few hundred bytes
MAX_FORM_BYTES = 16 * 1024  # an authorization request, a consent answer
MAX_DESCRIPTION_CHARS = 300  # of an error description quoted on the page: it may repeat what the request said
REGISTRATIONS_PER_MINUTE = 10  # per client address, after a first burst
REGISTRATION_BURST = 20

# An origin issuer stays without a trailing slash: clients compare it as a string with the `iss` they get back.
URL = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))


def oauth_routes(
    provider: InboxAuthProvider, access_token: str, sessions: DashboardSessions, dashboard: str = "/ui"
) -> list[Route]:
    """Routes to mount ahead of the dashboard (mounted at `dashboard`, whose session the consent page shares)
    and /mcp."""
    issuer = URL.validate_python(provider.issuer)
    registration = ClientRegistrationOptions(enabled=True, valid_scopes=list(SCOPES), default_scopes=list(SCOPES))
    revocation = RevocationOptions(enabled=True)
    replaced = (AUTHORIZATION_SERVER_METADATA, REVOCATION_PATH, REGISTRATION_PATH, AUTHORIZATION_PATH)
    routes = [
        route
        for route in create_auth_routes(provider, issuer, None, registration, revocation)
        if route.path not in replaced
    ]
    revoke = RequestBodyLimitMiddleware(
        cors_middleware(Revocation(provider).handle, ["POST", "OPTIONS"]), DEFAULT_MAX_REQUEST_BODY_SIZE
    )
    routes.append(Route(REVOCATION_PATH, revoke, methods=["POST", "OPTIONS"]))
    register = cors_middleware(Registration(provider, registration).handle, ["POST", "OPTIONS"])
    routes.append(Route(REGISTRATION_PATH, register, methods=["POST", "OPTIONS"]))

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
    return routes + _page_routes(provider, Access(access_token, dashboard, sessions))


def _page_routes(provider: InboxAuthProvider, access: Access) -> list[Route]:
    """The two a person's browser opens: /authorize, and the consent page it sends on to."""
    consent = ConsentPage(provider, access)
    sessions = access.sessions.middleware(request_response(consent.handle), path=access.prefix)
    authorization = request_response(AuthorizationPage(provider, consent).handle)
    return [
        Route(CONSENT_PATH, RequestBodyLimitMiddleware(sessions, MAX_FORM_BYTES), methods=["GET", "POST"]),
        Route(AUTHORIZATION_PATH, RequestBodyLimitMiddleware(authorization, MAX_FORM_BYTES), methods=["GET", "POST"]),
    ]


class Registration:
    """RFC 7591 dynamic registration, which anyone may call: the SDK's handler behind a body cap and a rate limit
    per client address (unused registrations are pruned by Upkeep)."""

    def __init__(self, provider: InboxAuthProvider, options: ClientRegistrationOptions) -> None:
        self.handler = RegistrationHandler(provider, options=options)
        self.limiter = RateLimiter(REGISTRATIONS_PER_MINUTE, REGISTRATION_BURST)

    async def handle(self, request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        wait = self.limiter.allow(address)
        if wait is not None:
            return _registration_error(429, "too many registrations from this address; try again later", wait)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_REGISTRATION_BYTES:
            return _registration_error(413, f"client metadata is limited to {MAX_REGISTRATION_BYTES} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REGISTRATION_BYTES:
                return _registration_error(413, f"client metadata is limited to {MAX_REGISTRATION_BYTES} bytes")

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.handler.handle(Request(request.scope, replay))


def _registration_error(status: int, description: str, wait: float | None = None) -> JSONResponse:
    headers = {"Retry-After": retry_after(wait)} if wait is not None else None
    body = {"error": "invalid_client_metadata", "error_description": description}
    return JSONResponse(body, status_code=status, headers=headers)


class AuthorizationPage:
    """The SDK's authorization endpoint, whose only redirect that leaves here is to the consent page. Any error
    (an unknown client, a bad scope, no PKCE, a malformed client id) is a page for the person in the browser:
    a redirect URI, even a registered one, is only trusted once the operator has seen it on the consent page,
    so an error never makes this server an open redirector (RFC 9700 §4.11.2)."""

    def __init__(self, provider: InboxAuthProvider, consent: ConsentPage) -> None:
        self.handler = AuthorizationHandler(provider)
        self.consent_url = f"{provider.issuer}{CONSENT_PATH}?"
        self.consent = consent

    async def handle(self, request: Request) -> Response:
        response = await self.handler.handle(request)
        location = response.headers.get("location", "")
        if response.status_code == 302 and location.startswith(self.consent_url):
            return response
        code, description = _error_of(response)
        message = f"This authorization request cannot go ahead: {description} Nothing was sent to the client."
        return self.consent.message(400, message, code)


def _error_of(response: Response) -> tuple[str, str]:
    """The RFC 6749 error and description the SDK put in a redirect's query or a JSON body."""
    if "location" in response.headers:
        fields = dict(parse_qsl(urlsplit(response.headers["location"]).query))
    else:
        try:
            fields = json.loads(bytes(response.body))
        except ValueError:
            fields = {}
    code = str(fields.get("error") or "invalid_request")
    description = str(fields.get("error_description") or "the request is not valid")[:MAX_DESCRIPTION_CHARS]
    description = description.rstrip(".") + "."
    return code, description


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
