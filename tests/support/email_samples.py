"""Fixed, realistic inputs for every kind of email.

The golden files, the browser layout tests and bench/bench_render.py all render these,
so a change in what a reader sees shows up as a reviewed diff.  The lead story is the
article in /work/shared/fixtures (Morocco, 24 Nov 2021); the others carry the mixed
runs that break naive RTL layouts (OPEC+, +962 6 123 4567, COVID-19, 50%).
"""

from __future__ import annotations

import datetime as dt

from service.rendering import contexts
from service.rendering.viewmodels import ArticleView, Link, SectionView, SiteView

UTC = dt.UTC
EDITION_AT = dt.datetime(2021, 11, 24, 19, 33, tzinfo=UTC)  # 21:33 in Amman
SITE = SiteView(
    name="نشرة",
    public_url="https://news.example",
    postal_address="نشرة، شارع المدينة المنورة 120، عمّان 11953، الأردن",
    timezone="Asia/Amman",
)

LEAD = ArticleView(
    id=1,
    title="المغرب والاحتلال يوقعان اتفاقا أمنيا غير مسبوق في المنطقة",
    url="https://news.example/عربي-دولي/المغرب-والاحتلال-اتفاق-أمني",
    summary=(
        "وقع المغرب والاحتلال الإسرائيلي الأربعاء اتفاقا للتعاون الأمني \"غير مسبوق\" في المنطقة "
        "خلال زيارة لوزير دفاع الاحتلال بيني غانتس إلى المملكة، في ظل توتر العلاقات بين المغرب وجارته الجزائر."
    ),
    section_slug="arab-world",
    section_name="عربي دولي",
    published_at=dt.datetime(2021, 11, 24, 15, 33, tzinfo=UTC),  # 17:33 in Amman
    updated_at=dt.datetime(2023, 6, 18, 9, 17, tzinfo=UTC),
    updated=True,
    lead_image_url="https://news.example/media/2021/11/gantz.jpg",
    lead_image_caption="وزير دفاع الاحتلال بيني غانتس",
    lead_image_alt="وزير دفاع الاحتلال بيني غانتس",
    read_also=(  # the article's two «اقرأ أيضاً» links
        Link("ملكة جمال اليونان تنسحب من مسابقة \"ملكة جمال الكون\" دعما لفلسطين",
             "https://news.example/ar/variety/2021/11/22/miss-greece-withdraws-miss-universe"),
        Link("كيف تحول المغرب إلى عملاق في مجال الطاقة الشمسية؟",
             "https://news.example/ar/economy/2021/11/20/morocco-solar-energy-giant"),
    ),
)

# Breaking news about an article we ingested: it brings its caption, its published and
# updated times and its read-also links (three here: an alert shows two).
QUAKE = ArticleView(
    id=2,
    title="زلزال بقوة 5.1 درجات يضرب جنوب الأردن",
    url="https://news.example/local/earthquake-aqaba",
    summary=(
        "أفاد مرصد الزلازل الأردني بأن الهزة وقعت عند الساعة 10:42 صباحا على عمق 10 كم، "
        "ولم ترد أنباء عن إصابات. للطوارئ اتصلوا على +962 6 123 4567."
    ),
    section_slug="local",
    section_name="محليات",
    published_at=dt.datetime(2021, 11, 24, 8, 45, tzinfo=UTC),  # 10:45 in Amman
    updated_at=dt.datetime(2021, 11, 24, 9, 30, tzinfo=UTC),
    lead_image_url="https://news.example/media/2021/11/aqaba.jpg",
    lead_image_caption="خليج العقبة صباح اليوم",
    read_also=(
        Link("خريطة الزلازل في الأردن خلال عشر سنوات", "https://news.example/local/quake-map"),
        Link("كيف تتصرف أثناء الهزة الأرضية؟", "https://news.example/local/quake-safety"),
        Link("رابط ثالث لا تحمله الرسالة", "https://news.example/local/third"),
    ),
)

_STORIES = [
    ("economy", "اقتصاد", "تحالف OPEC+ يبقي على خطته لزيادة الإنتاج رغم ضغوط واشنطن",
     "قرر تحالف OPEC+ الإبقاء على زيادة شهرية قدرها 400 ألف برميل يوميا، فيما ارتفع سعر خام برنت 2.5% في التعاملات المبكرة."),
    ("local", "محليات", "وزارة الصحة: خط ساخن جديد للاستفسار عن لقاحات COVID-19",
     "أعلنت الوزارة تخصيص الرقم +962 6 123 4567 للرد على استفسارات المواطنين على مدار الساعة."),
    ("economy", "اقتصاد", "البنك المركزي يرفع سعر الفائدة 0.25% للمرة الثانية هذا العام",
     "قال البنك في بيان إن القرار يهدف إلى الحفاظ على الاستقرار النقدي وجاذبية الدينار."),
    ("arab-world", "عربي دولي", "الجزائر تستدعي سفيرها في الرباط للتشاور",
     "جاءت الخطوة بعد أيام من إعلان الجزائر قطع علاقاتها الدبلوماسية مع المغرب بسبب \"أعمال عدائية\"."),
    ("tech", "تكنولوجيا", "شركة Apple تطلق تحديث iOS 15.2 بميزات جديدة للخصوصية",
     "يتيح التحديث للمستخدمين معرفة التطبيقات التي تصل إلى الكاميرا والميكروفون."),
    ("local", "محليات", "أمطار غزيرة متوقعة في عمّان والمرتفعات الجبلية مساء الخميس",
     "دعت إدارة الأرصاد الجوية السائقين إلى الحذر من تشكل السيول في المناطق المنخفضة."),
    ("sport", "رياضة", "النشامى يتأهلون إلى ربع نهائي كأس العرب FIFA 2021",
     "فاز المنتخب الوطني على مصر 3-1 في مباراة مثيرة على ملعب الجنوب في قطر."),
    ("arab-world", "عربي دولي", "الأمم المتحدة تحذر من أزمة غذاء في اليمن تطال 16 مليون شخص",
     "قال برنامج الأغذية العالمي WFP إن التمويل لا يغطي سوى نصف الاحتياجات."),
]
SECTION_ORDER = ["arab-world", "local", "economy", "tech", "sport"]


def articles(n: int = 12, *, start: dt.datetime = EDITION_AT) -> list[ArticleView]:
    """`n` articles cycling through the sample stories, one every 35 minutes back in time."""
    out = []
    for i in range(n):
        slug, name, title, summary = _STORIES[i % len(_STORIES)]
        round_ = i // len(_STORIES)
        out.append(
            ArticleView(
                id=100 + i,
                title=title if not round_ else f"{title} ({round_ + 1})",
                url=f"https://news.example/{slug}/{100 + i}",
                summary=summary,
                section_slug=slug,
                section_name=name,
                published_at=start - dt.timedelta(minutes=35 * (i + 1)),
                updated=(i % 5 == 3),
            )
        )
    return out


def sections(n: int = 12, *, with_lead: bool = True) -> list[SectionView]:
    """Sections in a reader's chosen order, the lead story in the first."""
    grouped: dict[str, list[ArticleView]] = {slug: [] for slug in SECTION_ORDER}
    names = {slug: name for slug, name, _, _ in _STORIES}
    if with_lead:
        grouped["arab-world"].append(LEAD)
    for a in articles(n - (1 if with_lead else 0)):
        grouped[a.section_slug].append(a)
    return [SectionView(slug=s, name=names[s], articles=tuple(grouped[s])) for s in SECTION_ORDER if grouped[s]]


# What `render_variant_for` adds to an edition's mail: its variant's web copy.
WEB_COPY_URL = "https://news.example/e/42/uG3kQ0b8yWm1Tz5nR2xV7a"


def all_contexts(site: SiteView = SITE, *, digest_articles: int = 12) -> dict[str, dict]:
    """One context per kind, from the fixed inputs above."""
    web = {"web_copy_url": WEB_COPY_URL}
    return {
        "digest": contexts.digest_context(
            site, sections(digest_articles), edition_date=EDITION_AT, frequency="daily", lead=LEAD
        ) | web,
        "alert": contexts.alert_context(
            site, headline=QUAKE.title, url=QUAKE.url, summary=QUAKE.summary, article=QUAKE, sent_at=EDITION_AT
        ) | web,
        "confirm": contexts.confirm_context(site, confirm_url="https://news.example/confirm/TOKEN-abc.123"),
        "welcome": contexts.welcome_context(
            site, sections=["عربي دولي", "اقتصاد", "تكنولوجيا"], frequency="daily", alerts=True, digest_hour=7
        ),
        "correction": contexts.correction_context(
            site,
            article=LEAD,
            note="صُحّح اسم الوزير المغربي المنتدب المكلف بإدارة الدفاع، وأضيفت تفاصيل عن مذكرة التفاهم في مجال الأمن السيبراني.",
        ) | web,
    }
