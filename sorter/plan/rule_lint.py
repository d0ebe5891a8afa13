"""Warnings about the rules, not errors: rules that can never match, postcodes two
destinations share, postcode patterns no postcode of the rule's countries can match."""

from __future__ import annotations

from typing import Final

from sorter.config import Problem
from sorter.plan.records import LETTER_CODES, Destination, LetterSet, Rule
from sorter.postcode import POSTCODE_FORMATS, PostcodeTerm, TermKind, term_fits_format

__all__ = ["lint_postcode_formats", "lint_rules"]

# A rule naming more countries than this is a "rest of the world" rule: not worth checking.
_MAX_FORMAT_CHECKED_COUNTRIES: Final = 40


def _range_holds(term: PostcodeTerm, norm: str) -> bool:
    return len(norm) == term.chars and norm.isdigit() and term.first <= norm <= term.last


def _term_within(inner: PostcodeTerm, outer: PostcodeTerm) -> bool:
    """Every postcode `inner` matches, `outer` matches too."""
    if outer.kind == TermKind.EXACT:
        return inner.kind == TermKind.EXACT and inner.text == outer.text
    if outer.kind == TermKind.PREFIX:
        if inner.kind == TermKind.RANGE:
            k = outer.chars
            return k <= inner.chars and inner.first[:k] == inner.last[:k] == outer.text
        return inner.text.startswith(outer.text)
    if inner.kind == TermKind.EXACT:
        return _range_holds(outer, inner.text)
    if inner.kind == TermKind.PREFIX:
        return False  # a prefix matches postcodes of every length; a range, of one
    return inner.chars == outer.chars and outer.first <= inner.first and inner.last <= outer.last


def _terms_overlap(a: PostcodeTerm, b: PostcodeTerm) -> bool:
    """Some postcode matches both."""
    if a.kind > b.kind:
        a, b = b, a  # EXACT < PREFIX < RANGE: fewer cases below
    if a.kind == TermKind.EXACT:
        if b.kind == TermKind.EXACT:
            return a.text == b.text
        if b.kind == TermKind.PREFIX:
            return a.text.startswith(b.text)
        return _range_holds(b, a.text)
    if a.kind == TermKind.PREFIX:
        if b.kind == TermKind.PREFIX:
            return a.text.startswith(b.text) or b.text.startswith(a.text)
        k = a.chars
        if k > b.chars or not a.text.isdigit():
            return False
        return b.first <= a.text + "9" * (b.chars - k) and a.text + "0" * (b.chars - k) <= b.last
    return a.chars == b.chars and a.first <= b.last and b.first <= a.last


def _covers(q: Rule, r: Rule) -> bool:
    """Rule q matches every item rule r matches (so r, after q, never gets one)."""
    if q.postcode is not None and (
        r.postcode is None
        or not all(any(_term_within(t, u) for u in q.postcode) for t in r.postcode)
    ):
        return False
    if q.barcode is not None and (r.barcode is None or r.barcode.pattern != q.barcode.pattern):
        return False
    for field_name in ("s10_service", "country", "origin"):
        qs: LetterSet | None = getattr(q, field_name)
        rs: LetterSet | None = getattr(r, field_name)
        if qs is not None and (rs is None or not rs.allowed <= qs.allowed):
            return False
    return q.size_classes is None or (
        r.size_classes is not None and r.size_classes <= q.size_classes
    )


def _may_share_postcodes(q: Rule, r: Rule, shadowed: set[int]) -> bool:
    """Whether an earlier rule q and r, to another destination, can both match one
    postcode: the same digits in two countries are two places."""
    return not (
        q.index in shadowed
        or q.destination == r.destination
        or q.postcode is None
        or r.postcode is None
        or (
            q.country is not None
            and r.country is not None
            and not q.country.allowed & r.country.allowed
        )
    )


def lint_rules(rules: list[Rule], destinations: list[Destination], file: str) -> list[Problem]:
    """Warnings, not errors: rules that can never match, postcodes two destinations share.

    "Never matches" is decided conservatively: an earlier rule whose every condition holds
    for all the later rule's items (regular expressions only when they are identical).
    """
    warnings: list[Problem] = []

    def name(rule: Rule) -> str:
        return destinations[rule.destination].name if rule.destination >= 0 else "?"

    shadowed: set[int] = set()
    for i, r in enumerate(rules):
        shadow = next((q for q in rules[:i] if _covers(q, r)), None)
        if shadow is not None:
            shadowed.add(i)
            warnings.append(
                Problem(
                    file,
                    f"rule[{i}]",
                    f"can never match: rule[{shadow.index}] ({name(shadow)}) comes first "
                    "and matches everything it does",
                )
            )
            continue
        for q in rules[:i]:
            if not _may_share_postcodes(q, r, shadowed):
                continue
            pairs = [
                (u, t) for u in q.postcode or () for t in r.postcode or () if _terms_overlap(u, t)
            ]
            if pairs:
                u, t = pairs[0]
                warnings.append(
                    Problem(
                        file,
                        f"rule[{i}].postcode",
                        f"{t.written.strip()} overlaps {u.written.strip()} of "
                        f"rule[{q.index}] ({name(q)}); "
                        f"rule[{q.index}] wins where both match",
                    )
                )
    return warnings


def _checked_countries(r: Rule) -> list[str]:
    """The rule's countries when its postcodes are worth checking against their forms: a
    postcode and a country condition, not too many countries, every one's form known."""
    if r.postcode is None or r.country is None:
        return []
    countries = sorted(LETTER_CODES[i] for i in r.country.allowed)
    if len(countries) > _MAX_FORMAT_CHECKED_COUNTRIES:
        return []
    if any(c not in POSTCODE_FORMATS for c in countries):
        return []
    return countries


def lint_postcode_formats(rules: list[Rule], file: str) -> list[Problem]:
    """Warnings for postcode patterns no postcode of the rule's countries can match (a
    5-digit range on a GB rule), where every one of those countries' forms is known."""
    warnings: list[Problem] = []
    for r in rules:
        countries = _checked_countries(r)
        if not countries:
            continue
        for j, term in enumerate(r.postcode or ()):
            if any(term_fits_format(term, f) for c in countries for f in POSTCODE_FORMATS[c]):
                continue
            forms = "; ".join(f"{c} {' '.join(POSTCODE_FORMATS[c])}" for c in countries)
            warnings.append(
                Problem(
                    file,
                    f"rule[{r.index}].postcode[{j}]",
                    f"{term.written!r} can never match a postcode of {', '.join(countries)} "
                    f"(forms without spaces: {forms}; 9 digit, A letter, X either)",
                )
            )
    return warnings
