"""Search an archive by text and by example: windows over recordings, embedded once into a vector
index, ranked by cosine similarity with filters on species, date and place (see index.py)."""
from bestiary.search.index import Index, SearchError

__all__ = ["Index", "SearchError"]
