"""ORM rows → the frozen views templates are rendered from."""

from __future__ import annotations

from service.models import Article
from service.rendering.viewmodels import ArticleView, Link


def _links(items) -> tuple[Link, ...]:
    out = []
    for item in items or ():
        if isinstance(item, dict) and item.get("url") and item.get("title"):
            out.append(Link(title=str(item["title"]), url=str(item["url"])))
    return tuple(out)


def article_view(article: Article, *, updated: bool = False) -> ArticleView:
    section = article.section
    return ArticleView(
        id=article.id,
        title=article.title,
        url=article.url,
        summary=article.summary or "",
        section_slug=section.slug if section else None,
        section_name=section.name if section else None,
        published_at=article.published_at,
        updated_at=article.source_updated_at,
        updated=updated,
        lead_image_url=article.lead_image_url,
        lead_image_caption=article.lead_image_caption,
        lead_image_alt=article.lead_image_alt,
        body_html=article.body_html or "",
        read_also=_links(article.read_also),
        related=_links(article.related),
    )
