"""Country names as Segment messages carry them (``United States``, ``USA``, ``IN``, ``United Kingdom``) ->
ISO-3166 alpha-2 region codes, for reading national-format phone numbers with the right country.

English names come from libphonenumber's region data (already a dependency); a small table adds the common
short forms and alpha-3 codes that data does not hold.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers

_EXTRA = {
    "usa": "US",
    "us": "US",
    "u.s.": "US",
    "u.s.a.": "US",
    "united states of america": "US",
    "america": "US",
    "uk": "GB",
    "u.k.": "GB",
    "great britain": "GB",
    "britain": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "northern ireland": "GB",
    "gbr": "GB",
    "ind": "IN",
    "can": "CA",
    "aus": "AU",
    "deu": "DE",
    "germany": "DE",
    "deutschland": "DE",
    "fra": "FR",
    "esp": "ES",
    "españa": "ES",
    "ita": "IT",
    "nld": "NL",
    "holland": "NL",
    "the netherlands": "NL",
    "bra": "BR",
    "brasil": "BR",
    "mex": "MX",
    "méxico": "MX",
    "jpn": "JP",
    "chn": "CN",
    "irl": "IE",
    "nzl": "NZ",
    "zaf": "ZA",
    "swe": "SE",
    "nor": "NO",
    "dnk": "DK",
    "fin": "FI",
    "che": "CH",
    "aut": "AT",
    "bel": "BE",
    "prt": "PT",
    "pol": "PL",
    "sgp": "SG",
    "isr": "IL",
    "are": "AE",
    "uae": "AE",
    "kor": "KR",
    "south korea": "KR",
    "korea": "KR",
    "russia": "RU",
    "rus": "RU",
    "phl": "PH",
    "idn": "ID",
    "tur": "TR",
    "turkey": "TR",
    "türkiye": "TR",
    "arg": "AR",
    "col": "CO",
    "chl": "CL",
    "per": "PE",
    "pak": "PK",
    "bgd": "BD",
    "ngn": "NG",
    "nga": "NG",
    "ken": "KE",
    "egy": "EG",
    "sau": "SA",
    "hkg": "HK",
    "twn": "TW",
    "vnm": "VN",
    "vietnam": "VN",
    "tha": "TH",
    "mys": "MY",
}


@lru_cache(maxsize=1)
def _names() -> dict[str, str]:
    """Lower-cased English (and local-language) region names -> region code, from libphonenumber."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    out: dict[str, str] = {}
    for region, names in LOCALE_DATA.items():
        if region not in phonenumbers.SUPPORTED_REGIONS:
            continue
        for lang in ("en", *names):
            name = names.get(lang)
            for _ in range(3):  # '*aa': same text as language 'aa' (bounded: the data has cycles)
                if not (isinstance(name, str) and name.startswith("*")):
                    break
                name = names.get(name[1:])
            if isinstance(name, str) and name and not name.startswith("*"):
                out.setdefault(name.strip().lower(), region)
    return out


@lru_cache(maxsize=4096)
def country_code(value: object) -> str | None:
    """ISO alpha-2 code of a country given as code or name; None when it is not recognised."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if len(text) == 2 and text.upper() in phonenumbers.SUPPORTED_REGIONS:
        return text.upper()
    key = text.lower()
    return _EXTRA.get(key) or _names().get(key)
