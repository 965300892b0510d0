"""Finding the course's data: a registry of files, verified downloads, text cleaning (chapter 1).

Every file the course reads is in ``REGISTRY`` with its sha256 and a pinned address.
``data_path`` looks for it, in order: under ``$LLMBOOK_DATA`` (a folder laid out like the
course's data folder, for offline and classroom use), in the user cache
(``$LLMBOOK_CACHE``, default ``~/.cache/llmbook``), and finally by downloading it into
the cache, checking the sha256 and writing atomically so an interrupted download never
leaves a half file behind. Nothing is downloaded at import time. Turning the text into
training examples is ``llmbook.datasets``'s job.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from llmbook.atomic import atomic_write_bytes

DATA_ENV = "LLMBOOK_DATA"
CACHE_ENV = "LLMBOOK_CACHE"
OFFLINE_ENV = "LLMBOOK_OFFLINE"


@dataclass(frozen=True)
class DataFile:
    path: str  # relative path, also the layout under $LLMBOOK_DATA and the cache
    sha256: str
    url: str
    member: str | None = None  # when the address is a zip: the member to extract
    zip_sha256: str | None = None


_GH = "https://raw.githubusercontent.com"
_RASBT = f"{_GH}/rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57"
_BOOKS = f"{_GH}/RU-ECE/ECE451-Parallel/c58dca3a6abedd8041057571c247e9a393cc3b4d/data/books"
_OPENAI = "https://openaipublic.blob.core.windows.net"
_UCI_ZIP = "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip"
_UCI_ZIP_SHA = "e0c5bd54da721b0058bfecedfd96dc0be0a323366ca99d4d694817493f47be90"

# (title, file, sha256) of the Project Gutenberg books in the corpus.
GUTENBERG_BOOKS: dict[str, tuple[str, str]] = {
    "11-0.txt": (
        "Alice's Adventures in Wonderland", "2bb7d5634ee2683a52fc0f016464124d35fc310f395f1b79d2ed0dc33c7f2a44"),
    "120-0.txt": ("Treasure Island", "e57c204e67befca99287e0cc94c7a65c514896369520d1bf067c89809edb765f"),
    "158-0.txt": ("Emma", "89b601ce13c21eca31766bdd1a554842fc9ecb7d3638cc769f41712a523e24cf"),
    "2701-0.txt": ("Moby Dick", "baf9b04fcf6e0008f30eaaa6697277751448c1070b20175e0082f28cbb161fd3"),
    "2852-0.txt": ("The Hound of the Baskervilles", "df5427dfa53abff570ed3351a99bc273e41f0c3cb4616fcd89d65765069af970"),
    "35-0.txt": ("The Time Machine", "0eb70818a4c7e2e04f91be807bad37ca5c1475cd51cec2a7b620c4db2b595ce4"),
    "43-0.txt": ("Dr. Jekyll and Mr. Hyde", "e1a3f2d20e0a7691708a6368d6b1acc7735a11cf652321ab180c6b731cf14222"),
    "46-0.txt": ("A Christmas Carol", "919e060656548dd0bf5f615fe85932e67718b9a58e5a535d1ff7548c4380caeb"),
    "98-0.txt": ("A Tale of Two Cities", "2fcfa071498b30724bd1bd714ba89e38477d632b86d74e87559f6259d3917e36"),
    "Pride_and_Prejudice_JaneAusten.txt": (
        "Pride and Prejudice", "6c1040a3497419c3e60becb60523a6d6befb392578c716cf5afd3a0c423a7145"),
    "pg174.txt": ("The Picture of Dorian Gray", "edd44263170a718360c75d5492958d7ab5bc7049e8493b84722ab07ebe5eaef6"),
    "pg345.txt": ("Dracula", "cffe55838a878a29da82a0e10b2909b7e46b6f7167ed7f815782465573e98f27"),
    "pg55.txt": ("The Wonderful Wizard of Oz", "8f77ce6c779b835598c8d2e5bb982e7bd81d95bd56f56522a8d4756d9d28efb2"),
}

_FILES = [
    DataFile("text/tinyshakespeare/input.txt",
             "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
             f"{_GH}/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt"),
    DataFile("text/the-verdict/the-verdict.txt",
             "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
             f"{_RASBT}/ch02/01_main-chapter-code/the-verdict.txt"),
    DataFile("instruction/instruction-data.json",
             "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
             f"{_RASBT}/ch07/01_main-chapter-code/instruction-data.json"),
    DataFile("eval/word_analogy/questions-words.txt",
             "8c29b3332afc46f3fb8be04cb5297bf96f39aa7131272dff57869b4485b22a36",
             f"{_GH}/tmikolov/word2vec/20c129af10659f7c50e86e3be406df663beff438/questions-words.txt"),
    DataFile("classification/sms_spam_collection/SMSSpamCollection",
             "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
             _UCI_ZIP, member="SMSSpamCollection", zip_sha256=_UCI_ZIP_SHA),
    DataFile("classification/sms_spam_collection/readme",
             "8753cd2d3cab68f80c8257851b8c2037778c267f55accb6fd1b5a2e32d36a84e",
             _UCI_ZIP, member="readme", zip_sha256=_UCI_ZIP_SHA),
    DataFile("tokenizers/gpt2/encoder.json",
             "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
             f"{_OPENAI}/gpt-2/encodings/main/encoder.json"),
    DataFile("tokenizers/gpt2/vocab.bpe",
             "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
             f"{_OPENAI}/gpt-2/encodings/main/vocab.bpe"),
    DataFile("tokenizers/gpt2/r50k_base.tiktoken",
             "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
             f"{_OPENAI}/encodings/r50k_base.tiktoken"),
] + [
    DataFile(f"text/gutenberg/{name}", sha, f"{_BOOKS}/{name}")
    for name, (_title, sha) in GUTENBERG_BOOKS.items()
]

REGISTRY: dict[str, DataFile] = {f.path: f for f in _FILES}


class DataNotFoundError(FileNotFoundError):
    """A registered file is neither local nor downloadable right now."""


class DataIntegrityError(OSError):
    """A file's bytes do not match the sha256 in the registry."""


def cache_dir() -> Path:
    """Where downloads go: ``$LLMBOOK_CACHE``, else ``$XDG_CACHE_HOME/llmbook``, else ``~/.cache/llmbook``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmbook"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_verified: dict[Path, float] = {}


def _verify(path: Path, entry: DataFile) -> Path:
    mtime = path.stat().st_mtime
    if _verified.get(path) == mtime:
        return path
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise DataIntegrityError(
            f"{path} does not match the registry (sha256 {actual}, expected {entry.sha256}). "
            f"The copy is damaged or a different version: delete it and run again to re-download, "
            f"or restore it from the course's data folder."
        )
    _verified[path] = mtime
    return path


def _fetch(url: str, timeout: float = 60.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _download(entry: DataFile, target: Path) -> None:
    payload = _fetch(entry.url)
    if entry.member is not None:
        zip_sha = hashlib.sha256(payload).hexdigest()
        if entry.zip_sha256 and zip_sha != entry.zip_sha256:
            raise DataIntegrityError(f"{entry.url} served a zip with sha256 {zip_sha}, expected {entry.zip_sha256}")
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            payload = zf.read(entry.member)
    actual = hashlib.sha256(payload).hexdigest()
    if actual != entry.sha256:
        raise DataIntegrityError(
            f"download of {entry.path} from {entry.url} has sha256 {actual}, expected {entry.sha256}; "
            f"nothing was written. The address may have changed: set {DATA_ENV} to a local copy."
        )
    atomic_write_bytes(target, payload)


def data_path(relpath: str, download: bool = True) -> Path:
    """The local path of a registered data file, downloading it into the cache if needed."""
    entry = REGISTRY.get(relpath)
    if entry is None:
        raise KeyError(f"{relpath!r} is not a registered data file; known files: {', '.join(sorted(REGISTRY))}")
    local_root = os.environ.get(DATA_ENV)
    if local_root:
        candidate = Path(local_root).expanduser() / relpath
        if candidate.is_file():
            return _verify(candidate, entry)
    cached = cache_dir() / relpath
    if cached.is_file():
        return _verify(cached, entry)
    where = f"{DATA_ENV}={local_root!r} (no {relpath} there)" if local_root else f"{DATA_ENV} is not set"
    if not download or os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataNotFoundError(
            f"{relpath} is not available offline: {where}, and it is not in the cache {cache_dir()}. "
            f"Set {DATA_ENV} to the course's data folder (the one holding text/, tokenizers/, ...) "
            f"or allow a download."
        )
    try:
        _download(entry, cached)
    except OSError as err:
        if isinstance(err, DataIntegrityError):
            raise
        raise DataNotFoundError(
            f"could not download {relpath} from {entry.url} ({err}); {where}. To work offline, set "
            f"{DATA_ENV} to a folder laid out like the course's data folder, e.g. "
            f"export {DATA_ENV}=/path/to/data"
        ) from err
    return _verify(cached, entry)


def read_text(relpath: str) -> str:
    """A registered text file as a str: UTF-8, BOM dropped, line endings normalised to ``\\n``."""
    raw = data_path(relpath).read_bytes().decode("utf-8-sig")
    return raw.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg eBook, without the licence header and footer.

    Gutenberg wraps every book between a line starting ``*** START OF`` and one starting
    ``*** END OF``; the text outside carries the Gutenberg licence and is not the book.
    """
    lines = text.split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("*** START OF")), None)
    end = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("*** END OF")), None)
    if start is None or end is None or end <= start:
        raise ValueError("no '*** START OF' ... '*** END OF' markers found: is this a Project Gutenberg text?")
    return "\n".join(lines[start + 1 : end]).strip() + "\n"


def load_corpus(name: str) -> str:
    """Named corpora: ``shakespeare``, ``verdict``, ``gutenberg`` (13 books), ``books+shakespeare``."""
    if name == "shakespeare":
        return read_text("text/tinyshakespeare/input.txt")
    if name == "verdict":
        return read_text("text/the-verdict/the-verdict.txt")
    if name == "gutenberg":
        return "\n\n".join(strip_gutenberg(read_text(f"text/gutenberg/{n}")) for n in GUTENBERG_BOOKS)
    if name == "books+shakespeare":
        return load_corpus("gutenberg") + "\n\n" + load_corpus("shakespeare")
    raise KeyError(f"unknown corpus {name!r}; choose shakespeare, verdict, gutenberg or books+shakespeare")
