"""[4] PII redaction of the text a report shows (sample generations, error messages).

Input:  a string (a prompt, a reference, a generation, a trial's error message).
Output: the string with e-mail addresses, US phone numbers and SSNs replaced by [EMAIL], [PHONE], [SSN].

LUME's Task2 biographies carry synthetic but real-looking PII; a report is shared in pull requests and
papers, so it shows none of it unless asked (`lume-ray report --no-redact`). The patterns cover the
formats the data uses, including LUME's escaped underscores ("goldi\\_aqua@me.com") and bare digit runs
(a 10-digit phone, a 9-digit SSN) that the QA answers hold.
"""

from __future__ import annotations

import re

_PII_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Emails first: their local part may hold digits. LUME escapes underscores ("goldi\_aqua@me.com").
    (re.compile(r"[A-Za-z0-9._%+\\-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"), "[EMAIL]"),
    # Phones: +1 / 1- prefix optional; (555) 201-3344, 555-201-3344, 555.201.3344, 555 201 3344.
    (re.compile(r"(?<![\d-])(?:\+?1[-.\s]?)?(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]\d{4}(?!\d)"), "[PHONE]"),
    # SSNs: 900-12-3456, 900 12 3456.
    (re.compile(r"(?<!\d)\d{3}[-\s]\d{2}[-\s]\d{4}(?!\d)"), "[SSN]"),
    # Bare digit runs: 11 digits starting with 1 or 10 digits are phones, 9 digits an SSN.
    (re.compile(r"(?<!\d)1?\d{10}(?!\d)"), "[PHONE]"),
    (re.compile(r"(?<!\d)\d{9}(?!\d)"), "[SSN]"),
)


def redact(text: str) -> str:
    """Replace emails, US phone numbers (incl. 10 bare digits) and SSNs (incl. 9 bare digits) with tags."""
    for pattern, tag in _PII_PATTERNS:
        text = pattern.sub(tag, text)
    return text


def keep(text: str) -> str:
    """The identity, for ``--no-redact``."""
    return text
