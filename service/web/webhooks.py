"""`POST /webhooks/{provider}` (`ses`, `mailgun`, `postmark`, `sendgrid`): bounces,
complaints and deliveries from the providers a newsroom sends through.

No session, cookie or token of ours: each provider proves itself its own way (a
signature, or Postmark's basic auth), which service/inbound/webhooks checks on the raw
bytes — so the body is read here untouched, never parsed by the framework.  The work
(a certificate fetch, one transaction) runs in the threadpool.  Answers are JSON; a
provider that is not configured is a 404, a body over 1 MB a 413 (security.BodyLimit
lets these routes have that much), and nothing a client sends gives a 5xx.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from service.inbound.webhooks.receive import PROVIDERS, receive
from service.web.access import ANYONE
from service.web.security import WEBHOOK_MAX_BODY

router = APIRouter(dependencies=[ANYONE])  # providers prove themselves in the request (see above)


def _endpoint(provider: str):
    async def webhook(request: Request) -> JSONResponse:
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > WEBHOOK_MAX_BODY:
                    return JSONResponse({"error": "request body too large"}, status_code=413)
        except ClientDisconnect:
            return JSONResponse({"error": "the request ended early"}, status_code=400)
        answer = await run_in_threadpool(receive, provider, dict(request.headers), bytes(body))
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    return webhook


# One route per provider rather than a path parameter: an unknown provider is the
# router's plain 404, and every route the app has is one a test can walk as it is.
for _name in sorted(PROVIDERS):
    router.add_api_route(f"/webhooks/{_name}", _endpoint(_name), methods=["POST"], name=f"webhook_{_name}")
