"""Lists stay JSON arrays (the contract shows `GET /nodes` as one); pages are
chosen with `?limit=&offset=` and described by `X-Total-Count` and `Link`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Query, Request, Response
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from edgefn.controlplane.fields import JSON_INT_MAX

T = TypeVar("T")
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    # OFFSET is a 64-bit integer in SQLite and PostgreSQL; past that the driver fails.
    offset: Annotated[int, Query(ge=0, le=JSON_INT_MAX)] = 0,
) -> Page:
    return Page(limit, offset)


def paginate(session: Session, query: Select[T], page: Page) -> tuple[list[T], int]:
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    items = list(session.scalars(query.limit(page.limit).offset(page.offset)))
    return items, int(total or 0)


def describe_page(request: Request, response: Response, page: Page, total: int) -> None:
    response.headers["X-Total-Count"] = str(total)
    links = []
    if page.offset + page.limit < total:
        url = request.url.include_query_params(offset=page.offset + page.limit, limit=page.limit)
        links.append(f'<{url}>; rel="next"')
    if page.offset > 0:
        url = request.url.include_query_params(
            offset=max(0, page.offset - page.limit), limit=page.limit
        )
        links.append(f'<{url}>; rel="prev"')
    if links:
        response.headers["Link"] = ", ".join(links)
