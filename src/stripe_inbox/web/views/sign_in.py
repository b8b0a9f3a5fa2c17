"""Signing in to the dashboard with the access token (throttled per address after failures) and signing out,
which ends the session on the server. Without a token there is nothing to sign in to."""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..throttle import SignInThrottle
from .kit import PageKit


class SignIn:
    def __init__(self, kit: PageKit, throttle: SignInThrottle) -> None:
        self.kit = kit
        self.access = kit.access
        self.throttle = throttle

    def routes(self) -> list[Route]:
        return [
            Route("/sign-in", self.form, methods=["GET"]),
            Route("/sign-in", self.kit.action(self.sign_in), methods=["POST"]),
            Route("/sign-out", self.kit.action(self.sign_out), methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        if not self.access.token_required:
            return RedirectResponse(f"{self.kit.prefix}/", status_code=303)
        target = self.access.safe_next(request.query_params.get("next"))
        return self.kit.render(request, "sign_in.html", {"title": "Sign in", "next": target})

    async def sign_in(self, request: Request, form: FormData) -> Response:
        target = self.access.safe_next(form.get("next"))
        address = request.client.host if request.client else "unknown"
        if wait := self.throttle.wait_seconds(address):
            error = f"Too many failed attempts from your address: try again in {wait} s."
            response = self.kit.render(
                request, "sign_in.html", {"title": "Sign in", "next": target, "error": error}, 429
            )
            response.headers["retry-after"] = str(wait)
            return response
        if self.access.accepts_token(str(form.get("token", ""))):
            self.throttle.succeeded(address)
            self.access.sign_in(request)
            return RedirectResponse(target, status_code=303)
        self.throttle.failed(address)
        context = {"title": "Sign in", "next": target, "error": "That is not the access token."}
        return self.kit.render(request, "sign_in.html", context, 401)

    async def sign_out(self, request: Request, form: FormData) -> Response:
        await self.access.sign_out(request)
        where = self.access.sign_in_path if self.access.token_required else f"{self.kit.prefix}/"
        return RedirectResponse(where, status_code=303)
