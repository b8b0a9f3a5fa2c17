"""Where the inbox's answers leave for an MCP client: its errors become the kind the protocol expects of a tool,
a resource or a prompt, what it shows is what the presenter shows (personal data masked as the `redact` setting
asks), and a tool's result is sent once
as structure and once as compact JSON text."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Literal, ParamSpec, TypeVar

import mcp.types as types
import pydantic_core
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from ..errors import InboxError, InvalidArgument, NotFound
from ..presenter import Presenter

Surface = Literal["tool", "resource", "prompt"]
Params = ParamSpec("Params")
Result = TypeVar("Result")
Finished = TypeVar("Finished")


class Boundary:
    """Decorators for the functions MCP calls; the SDK still reads each wrapped function's own signature."""

    def __init__(self, presenter: Presenter) -> None:
        self.presenter = presenter

    def tool(
        self, handler: Callable[Params, Awaitable[Result]]
    ) -> Callable[Params, Awaitable[Result | types.CallToolResult]]:
        """For a function that returns a model: the SDK still derives the output schema from its signature."""
        return self._guard(handler, "tool", self._tool_result)

    def resource(self, handler: Callable[Params, Awaitable[Any]]) -> Callable[Params, Awaitable[str]]:
        """For a function that returns a model or a JSON-able value: the resource is its JSON text."""
        return self._guard(handler, "resource", self._json)

    def prompt(self, handler: Callable[Params, Awaitable[str]]) -> Callable[Params, Awaitable[str]]:
        """A prompt masks the data it quotes with `present`; this masks e-mail addresses left in its text."""
        return self._guard(handler, "prompt", self.present)

    def present(self, value: Result) -> Result:
        """`value` as a client may see it; a model stays a model of its own type."""
        return self.presenter.shown(value)

    def _tool_result(self, value: Result) -> Result | types.CallToolResult:
        """The structured result, and the same data as compact JSON text for clients that read only the text
        (Claude Desktop). The SDK would indent that copy, making it half again the size of the structure, and
        every byte of it sits in the model's context."""
        presented = self.present(value)
        if not isinstance(presented, BaseModel):
            return presented  # the SDK's own conversion; no tool returns anything but a model today
        structured = presented.model_dump(mode="json", by_alias=True)
        text = pydantic_core.to_json(structured).decode()
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)

    def _json(self, value: Any) -> str:
        return pydantic_core.to_json(self.present(value)).decode()

    def _guard(
        self, handler: Callable[Params, Awaitable[Result]], surface: Surface, finish: Callable[[Result], Finished]
    ) -> Callable[Params, Awaitable[Finished]]:
        @functools.wraps(handler)
        async def guarded(*args: Params.args, **kwargs: Params.kwargs) -> Finished:
            try:
                result = await handler(*args, **kwargs)
            except InboxError as error:
                raise _protocol_error(error, surface) from None
            return finish(result)

        return guarded


def _protocol_error(error: InboxError, surface: Surface) -> Exception:
    message = str(error)
    if surface == "tool":
        return ToolError(message)  # a result the model reads, so it can correct its call
    if surface == "resource":
        return ResourceNotFoundError(message) if isinstance(error, NotFound) else ResourceError(message)
    code = types.INVALID_PARAMS if isinstance(error, NotFound | InvalidArgument) else types.INTERNAL_ERROR
    return MCPError(code=code, message=message)
