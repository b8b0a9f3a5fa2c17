"""The consent page, where the operator allows or denies a client. Signing in and deciding are separate forms, so
pressing Enter in the sign-in field signs in and nothing more; a dashboard session counts as signed in. Every form
carries a CSRF token that must match a cookie set with the page, so another site cannot submit it."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..auth.provider import CONSENT_PATH, ConsentRequest, InboxAuthProvider
from ..auth.rate_limit import RateLimiter, retry_after
from ..auth.scopes import DESCRIPTIONS, READ, WRITE
from .auth import Access

CSRF_COOKIE = "stripe_inbox_consent_csrf"
DECISIONS = ("allow", "allow_read", "deny")
WRONG_TOKENS_PER_MINUTE = 10  # per client address: the access token is not for guessing here either
WRONG_TOKEN_BURST = 10


def templates() -> Environment:
    return Environment(loader=PackageLoader("stripe_inbox.web"), autoescape=select_autoescape(default=True))


class ConsentPage:
    """GET shows who asks for what; POST either signs in (`intent=sign_in`) or answers (`decision`), never both.
    Needs the dashboard's SignedSessions in front of it, for `request.session`."""

    def __init__(self, provider: InboxAuthProvider, access: Access) -> None:
        self.provider = provider
        self.access = access
        self.secure_cookie = provider.issuer.startswith("https://")
        self.sign_ins = RateLimiter(WRONG_TOKENS_PER_MINUTE, WRONG_TOKEN_BURST)
        self.template = templates().get_template("consent.html")

    async def handle(self, request: Request) -> Response:
        await self.access.sessions.refresh()  # a sign-out on another replica ends the session here too
        return await (self.show(request) if request.method == "GET" else self.answer(request))

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
            CSRF_COOKIE, csrf, path=CONSENT_PATH, httponly=True, secure=self.secure_cookie, samesite="strict"
        )
        return response

    async def answer(self, request: Request) -> Response:
        form = await request.form()
        request_id, csrf = str(form.get("request", "")), str(form.get("csrf", ""))
        if not self._from_the_page(request, csrf):
            return self.message(403, "This form was not sent from the page it belongs to. Go back and reload it.")
        pending = await self.provider.consent_request(request_id) if request_id else None
        if pending is None:
            return self._gone()
        if form.get("intent") == "sign_in":
            return self._sign_in(request, form, pending, request_id, csrf)
        decision = str(form.get("decision", ""))
        if decision not in DECISIONS:
            return self._page(request, pending, request_id, csrf, error="Choose Allow or Deny.", status=400)
        # Denying grants nothing, so it needs no sign-in; allowing does, and a token sent along does not count.
        if decision != "deny" and not self.access.signed_in(request):
            return self._page(request, pending, request_id, csrf, error="Sign in first.", status=401)
        destination = await self.provider.answer(request_id, decision != "deny", read_only=decision == "allow_read")
        if destination is None:
            return self._gone()
        return RedirectResponse(destination, status_code=303, headers=PAGE_HEADERS)

    def _sign_in(
        self, request: Request, form: FormData, pending: ConsentRequest, request_id: str, csrf: str
    ) -> Response:
        address = request.client.host if request.client else "unknown"
        wait = self.sign_ins.wait(address)
        if wait is not None:
            error = "Too many wrong tokens; wait a minute."
            page = self._page(request, pending, request_id, csrf, error=error, status=429)
            page.headers["Retry-After"] = retry_after(wait)
            return page
        if not self.access.accepts_token(str(form.get("token", ""))):
            self.sign_ins.allow(address)  # only wrong tokens count
            return self._page(request, pending, request_id, csrf, error="That is not the access token.", status=401)
        self.access.sign_in(request)  # the dashboard's session: signed in here is signed in there
        back = f"{CONSENT_PATH}?{urlencode({'request': request_id})}"
        return RedirectResponse(back, status_code=303, headers=PAGE_HEADERS)

    def _from_the_page(self, request: Request, csrf: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        origin = request.headers.get("origin")
        return bool(cookie) and hmac.compare_digest(csrf.encode(), cookie.encode()) and origin in (None, self.origin)

    @property
    def origin(self) -> str:
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
            signed_in=self.access.signed_in(request),
            request_id=request_id,
            csrf=csrf,
            error=error,
            action=CONSENT_PATH,
        )
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def _gone(self) -> HTMLResponse:
        return self.message(
            400, "This authorization request is unknown, expired or already answered. Start again from the client."
        )

    def message(self, status: int, message: str, code: str | None = None) -> HTMLResponse:
        html = self.template.render(message=message, code=code)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    # No form-action: browsers apply it to the redirect after the form too, and that goes to the client.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with the form.
    "Referrer-Policy": "same-origin",
}
