"""Domain script actors of workflow 3001 "Complete Job Processing Pipeline".

Each function is a script actor (``fn(subjects, params) -> list``; see
actors/examples.py): called once per wave, pure and deterministic, with no
database access. Set-based work (mapping skills to the canonical list, saving
results) is done by SQL actors in seeds/3001_job_pipeline.sql; these functions
do the text work that is awkward in SQL.

- ``normalise_skills`` (step 13): clean the skill names of step 12's model
  output (salvaging them from a rejected answer), add the skills a posting lists
  itself ("Skills: a, b, c."), and de-duplicate by the same key as the SQL
  function ``public.skill_key`` (seeds/0020_skills.sql).
- ``ihl_text_signals`` (step 17): internal-hire likelihood (IHL) signals found
  in the text: internal-sounding phrases, very specific requirements, a rushed
  application window.
- ``ihl_evidence`` (step 18): adds the posting's history and structure
  (times reposted, no salary, a thin description, years asked vs seniority) and
  turns all signals into a prior score 1-10 and short evidence lines for the
  IHL models (steps 19-21). Step 22 falls back to that prior score when the
  final model's answer is unusable, so every posting gets a score.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from interpreter.actor_api import Result, Subject

# ---------------------------------------------------------------- skills

# Mirrors public.skill_key(text) in seeds/0020_skills.sql: lower case, every run
# of characters other than a-z 0-9 + # becomes one space, trimmed.
_KEY_RE = re.compile(r"[^a-z0-9+#]+")

# Lines where a posting lists its skills itself ("Tech stack and skills: a, b.").
_SKILLS_LINE = re.compile(
    r"(?:^|(?<=[.!?])[ \t]+)[ \t*•-]*(?:key skills|skills|tech stack and skills|tech stack|"
    r"tools you'll use|tools|technologies|stack)\s*:\s*(?P<list>.+)$", re.IGNORECASE | re.MULTILINE)
_SPLIT = re.compile(r"\s*(?:[,;|\n•]|\band\b|\bor\b)\s*", re.IGNORECASE)
_LEAD = re.compile(
    r"^(?:(?:strong|solid|good|very good|excellent|basic|deep|hands-on|proven)\s+)*"
    r"(?:(?:knowledge|experience|familiarity|fluency|proficiency|skills?|expertise)\s+"
    r"(?:of|with|in)\s+)?", re.IGNORECASE)
_TRAIL = re.compile(r"\s*(?:is a plus|are a plus|\(.*?\))\s*$", re.IGNORECASE)
# Words a small model copies from the prompt or the posting instead of skills.
STOP_KEYS = frozenset({
    "skills", "skill", "soft skills", "hard skills", "tools", "tool", "technologies",
    "technology", "languages", "language", "job", "role", "company", "salary", "benefits",
    "location", "title", "requirements", "responsibilities", "experience", "none", "n a",
    "other", "reasons", "description"})
_JUNK = re.compile(r"^[\W\d_]*$")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.){1,60})(?:"|$)')
MAX_SKILL_CHARS = 40
MAX_SKILL_WORDS = 4


def skill_key(name: str) -> str:
    """The key skills are matched on (the same rule as SQL's public.skill_key)."""
    return _KEY_RE.sub(" ", unicodedata.normalize("NFKC", name).lower()).strip()


def clean_skill(raw: Any) -> str | None:
    """A skill name fit to show, or None for junk (too long, no letters, a sentence)."""
    if not isinstance(raw, str):
        return None
    text = unicodedata.normalize("NFKC", raw)
    text = " ".join(text.split()).strip(" \t-*•.:;,\"'`")
    text = _LEAD.sub("", text)
    text = _TRAIL.sub("", text).strip(" \t-*•.:;,\"'`")
    if not text or _JUNK.match(text) or len(text) > MAX_SKILL_CHARS:
        return None
    if len(text.split()) > MAX_SKILL_WORDS or skill_key(text) in STOP_KEYS:
        return None
    return text


def listed_skills(description: str, limit_chars: int = 20_000) -> list[str]:
    """Skills the posting lists itself, from lines like "Skills: a, b and c."."""
    found: list[str] = []
    for m in _SKILLS_LINE.finditer(description[:limit_chars]):
        found.extend(p for p in _SPLIT.split(m.group("list").rstrip(". ")) if p)
    return found


def model_skills(output: Any) -> tuple[list[str], bool]:
    """(names, salvaged): skills from step 12's output, or from its rejected raw text."""
    if isinstance(output, dict) and isinstance(output.get("skills"), list):
        return [s for s in output["skills"] if isinstance(s, str)], False
    raw = output.get("raw") if isinstance(output, dict) else None
    if not isinstance(raw, str) or not raw:
        return [], False
    try:
        value = json.loads(raw)
        if isinstance(value, dict) and isinstance(value.get("skills"), list):
            return [s for s in value["skills"] if isinstance(s, str)], True
    except ValueError:
        pass
    # A truncated or malformed JSON answer: take the quoted strings but the key names.
    names = [m.group(1) for m in _QUOTED.finditer(raw[:4000])]
    return [n for n in names if n.lower() not in {"skills", "raw", "error"}], True


def normalise_skills(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Step 13: {"skills": [clean names], "from_model": n, "from_text": n, "salvaged": b}.

    params: ``model_step`` (12), ``max_skills`` (25), ``use_listed`` (true).
    """
    step = str(params.get("model_step", 12))
    max_skills = int(params.get("max_skills", 25))
    use_listed = bool(params.get("use_listed", True))
    out: list[Any] = []
    for s in subjects:
        try:
            from_model, salvaged = model_skills(s.outputs.get(step))
            from_text = listed_skills(str(s.row.get("description") or "")) if use_listed else []
            names: list[str] = []
            # The posting's own name and company are not skills (a model often echoes them).
            seen: set[str] = {skill_key(str(s.row.get(k) or "")) for k in ("title", "company")}
            seen.discard("")
            counts = {"model": 0, "text": 0}
            # What the posting lists itself first: it is more reliable than a small model.
            for source, items in (("text", from_text), ("model", from_model)):
                for item in items:
                    name = clean_skill(item)
                    key = skill_key(name) if name else ""
                    if not key or key in seen or len(names) >= max_skills:
                        continue
                    seen.add(key)
                    names.append(name)  # type: ignore[arg-type]
                    counts[source] += 1
            out.append({"skills": names, "from_model": counts["model"],
                        "from_text": counts["text"], "salvaged": salvaged})
        except Exception as exc:  # noqa: BLE001 - one odd posting fails alone
            out.append(exc)
    return out


# ---------------------------------------------------------------- IHL signals

# (signal, weight, pattern). Weights are points on the way to a 1-10 prior.
_TEXT_SIGNALS: list[tuple[str, float, re.Pattern[str]]] = [
    ("internal_candidate", 3.0, re.compile(
        r"\b(?:internal (?:candidate|applicant|hire|transfer)s?|current (?:employee|staff|"
        r"team member)s? (?:only|preferred|will be)|incumbent|already identified|"
        r"preferred candidate|internal posting|posted (?:for|to meet) (?:compliance|"
        r"legal) (?:reasons|requirements)|acting in (?:this|the) role)\b", re.I)),
    ("company_specific_experience", 2.5, re.compile(
        r"\b(?:experience (?:with|in|on) our (?:internal|proprietary|in-house|own)|"
        r"knowledge of our (?:internal|proprietary|in-house|existing)|"
        r"(?:previous|prior) (?:experience|employment) (?:at|with|in) (?:this|our) "
        r"(?:company|department|team|office|organi[sz]ation)|must have worked (?:at|for|in) "
        r"(?:this|our)|familiarity with our (?:internal|proprietary|in-house))\b", re.I)),
    ("oddly_specific_requirement", 1.5, re.compile(
        r"\b(?:exactly \d+ years|\d+\s*(?:\+\s*)?years? (?:of )?experience (?:with|in|using) "
        r"(?:version|v)\s?\d|certified in [\w\s]{1,30} version \d|"
        r"(?:must|should) hold (?:the )?[A-Z][\w-]+ (?:certificate|certification) "
        r"(?:issued|obtained) (?:in|before|after) (?:19|20)\d\d)\b", re.I)),
    ("rushed_window", 1.5, re.compile(
        r"\b(?:applications? close[sd]? (?:today|tomorrow|within \d+ (?:hours|days?))|"
        r"open for (?:\d+|one|two|three) (?:days?|hours)|apply within (?:24|48|72) hours|"
        r"posting (?:will be )?open for a short time)\b", re.I)),
    ("reference_to_team_knowledge", 1.0, re.compile(
        r"\b(?:you already know (?:the|our) team|as discussed|continue (?:the|your) "
        r"current (?:work|projects?)|take over from (?:yourself|the current)|"
        r"backfill)\b", re.I)),
]
_SEN_YEARS = {"intern": 0, "junior": 2, "mid": 5, "senior": 9, "lead": 12, "staff": 15,
              "principal": 20, "manager": 12, "director": 20}
_YEARS_RE = re.compile(r"\b(\d{1,2})\s*\+?\s*years?\b", re.I)
TEXT_SCAN_CHARS = 50_000


def _snippet(text: str, start: int, end: int, width: int = 80) -> str:
    lo = max(0, start - (width - (end - start)) // 2)
    snip = " ".join(text[lo:lo + width].split())
    return snip[:width]


def text_signals(title: str, description: str) -> list[dict[str, Any]]:
    text = f"{title}\n{description[:TEXT_SCAN_CHARS]}"
    found: list[dict[str, Any]] = []
    for name, weight, pattern in _TEXT_SIGNALS:
        m = pattern.search(text)
        if m:
            found.append({"signal": name, "weight": weight,
                          "evidence": _snippet(text, m.start(), m.end())})
    return found


def ihl_text_signals(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Step 17: {"signals": [{signal, weight, evidence}], "text_points": x}."""
    out: list[Any] = []
    for s in subjects:
        try:
            found = text_signals(str(s.row.get("title") or ""),
                                 str(s.row.get("description") or ""))
            out.append({"signals": found,
                        "text_points": round(sum(f["weight"] for f in found), 2)})
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def history_signals(row: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    reposted = row.get("times_reposted") or 0
    if isinstance(reposted, int) and reposted >= 2:
        found.append({"signal": "reposted", "weight": min(3.0, 1.0 + 0.5 * reposted),
                      "evidence": f"reposted {reposted} times"})
    elif reposted == 1:
        found.append({"signal": "reposted", "weight": 0.5, "evidence": "reposted once"})
    if row.get("salary_min") is None and row.get("salary_max") is None:
        found.append({"signal": "no_salary", "weight": 0.5, "evidence": "no salary range"})
    description = str(row.get("description") or "")
    if len(description.strip()) < 400:
        found.append({"signal": "thin_description", "weight": 1.0,
                      "evidence": f"description has only {len(description.strip())} characters"})
    years = [int(y) for y in _YEARS_RE.findall(description[:TEXT_SCAN_CHARS])]
    cap = _SEN_YEARS.get(str(row.get("seniority") or "").lower())
    if years and cap is not None and max(years) > cap:
        found.append({"signal": "years_vs_seniority", "weight": 1.0,
                      "evidence": f"asks {max(years)}+ years for a {row.get('seniority')} role"})
    return found


def prior_score(points: float) -> int:
    """Signal points to a 1-10 prior: no signal is 2 (most postings are open)."""
    return max(1, min(10, round(2 + points)))


def ihl_evidence(subjects: list[Subject], params: dict[str, Any]) -> list[Any]:
    """Step 18: {"prior_score": 1-10, "evidence": [lines], "signals": [names]}.

    params: ``text_step`` (17), ``max_lines`` (8).
    """
    text_step = str(params.get("text_step", 17))
    max_lines = int(params.get("max_lines", 8))
    out: list[Any] = []
    for s in subjects:
        try:
            text = s.outputs.get(text_step) or {}
            found = list(text.get("signals") or []) if isinstance(text, dict) else []
            found += history_signals(s.row)
            points = sum(float(f.get("weight", 0)) for f in found)
            lines = [f"{f['signal']}: {f['evidence']}" for f in found][:max_lines]
            score = prior_score(points)
            out.append(Result({"prior_score": score, "points": round(points, 2),
                               "evidence": lines or ["no signal found"],
                               "signals": [f["signal"] for f in found]}, "DONE"))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out
