"""The one shape of a refused request, shared by every desk and store the HTTP API calls.

``status`` is the HTTP answer (400 naming ``field``, 403, 404, 409, 503); ``details`` holds one
message per problem when there are several (an invalid IVR flow). The API's endpoint wrapper
(hotline/api.py) turns any of them into its JSON error, so no handler translates errors itself.
"""

from __future__ import annotations


class Refused(Exception):
    status = 400

    def __init__(self, message: str, field: str | None = None, *, status: int | None = None,
                 details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = list(details or ())
        if status is not None:
            self.status = status

    def fields(self) -> list[dict[str, str]]:
        """The answer's ``fields``: one per problem, or the one field the refusal is about."""
        if self.details:
            return [{"field": self.field or "body", "message": m} for m in self.details]
        return [{"field": self.field, "message": self.message}] if self.field else []
