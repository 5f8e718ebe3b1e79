"""Local modules travel with the calls that need them.

A **local module** is one whose file is not part of an installed distribution: not
under the interpreter's standard library or any ``site-packages`` (a ``.py`` file or a
package beside the notebook or script, on ``PYTHONPATH``, an editable install), and
not zexec itself. The user's server cannot import it, so:

1. With cloudpickle (the default), every local module that is imported in the calling
   process is pickled *by value* (``cloudpickle.register_pickle_by_value``): the
   functions and classes a call uses from it (the function itself, the globals it
   names, its arguments' classes) travel with their code, like notebook functions.
2. Modules a function imports by name in its body (``import mylib``, ``from mylib
   import f`` inside the function, seen in its bytecode), every local module with dill
   (which pickles module functions by reference), and the modules named with
   ``modules=[...]`` (on ``zexec.remote``, ``Client``, ``connect``) are *shipped as
   source*: the whole top-level package (its ``.py`` files), and the local modules its
   own source imports. The server's worker imports them from that source (a
   ``sys.meta_path`` finder put first), replacing an older version it imported earlier.

Limits: only ``.py`` source travels (not C extensions or data files beside it); a
shipped module's own imports of installed packages must be installed on the server
(``environment([...])``); imports the bytecode does not show (``importlib.import_module``
of a computed name) need ``modules=``; at most :data:`MAX_SOURCE_BYTES` per call.

Wire format: the function frame is the pickle of ``_Bundle(payload, fn)``, which
unpickles to ``fn`` itself after :func:`install` ran (the pickle calls it before it
loads ``fn``, whose references may need the shipped modules).
"""

from __future__ import annotations

import dis
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import site
import sys
import sysconfig
import types
from functools import lru_cache
from typing import Any

from zexec.core.errors import ConfigurationError

#: Source shipped with one call, at most (a larger set is an error saying what to do).
MAX_SOURCE_BYTES = 16 * 1024 * 1024

# ---------------------------------------------------------------- which modules are local


@lru_cache(maxsize=1)
def _installed_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    dirs.update(os.path.join(p, "lib") for p in (sys.prefix, sys.base_prefix))
    return tuple(sorted(os.path.realpath(d) + os.sep for d in dirs if d))


@lru_cache(maxsize=4096)
def _local_file(path: str) -> bool:
    real = os.path.realpath(path)
    return real.endswith(".py") and not real.startswith(_installed_dirs())


def is_local(module: types.ModuleType | None) -> bool:
    """Whether ``module`` is local (see the module doc)."""
    if module is None:
        return False
    name = getattr(module, "__name__", "") or ""
    top = name.partition(".")[0]
    if not name or name == "__main__" or top == "zexec" or top in sys.stdlib_module_names:
        return False
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and _local_file(path)


def root_of(name: str) -> types.ModuleType | None:
    """The imported top-level package (or module) of ``name``, if any."""
    return sys.modules.get(name.partition(".")[0])


_registered_at = -1


def register_local_modules() -> None:
    """Have cloudpickle pickle every imported local module by value (rule 1). Costs a
    length check unless modules were imported since the last call."""
    global _registered_at
    if len(sys.modules) == _registered_at:
        return
    import cloudpickle

    have = set(cloudpickle.list_registry_pickle_by_value())
    for name, module in list(sys.modules.items()):
        if "." not in name and name not in have and is_local(module):
            cloudpickle.register_pickle_by_value(module)
    _registered_at = len(sys.modules)


# ---------------------------------------------------------------- what a function needs


@lru_cache(maxsize=4096)
def _imports(code: types.CodeType, package: str) -> frozenset[str]:
    """Absolute names of the modules ``code`` (and code nested in it) imports."""
    found: set[str] = set()
    level = 0
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_CONST" and isinstance(ins.argval, int):
            level = ins.argval
        elif ins.opname == "IMPORT_NAME":
            name = ins.argval
            if level and package:
                try:
                    name = importlib.util.resolve_name("." * level + name, package)
                except ImportError:
                    continue
            found.add(name)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _imports(const, package)
    return frozenset(found)


def _local_root(name: str) -> str | None:
    """The top-level name of ``name`` if that is a local module or package (imported
    here, or findable without importing anything)."""
    top = name.partition(".")[0]
    module = sys.modules.get(top)
    if module is not None:
        return top if is_local(module) else None
    return _findable_local_root(top)


@lru_cache(maxsize=4096)
def _findable_local_root(top: str) -> str | None:
    """:func:`_local_root` of a module not imported here (looked up once: a path
    search)."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return top if isinstance(origin, str) and top not in sys.stdlib_module_names \
        and top != "zexec" and _local_file(origin) else None


def _referenced_modules(fn: Any) -> set[str]:
    """Modules of what ``fn`` references (itself, its globals, closure, defaults)."""
    names = {getattr(fn, "__module__", "") or ""}
    code = getattr(fn, "__code__", None)
    values: list[Any] = list(getattr(fn, "__defaults__", None) or ())
    values += [c.cell_contents for c in getattr(fn, "__closure__", None) or ()
               if _filled(c)]
    if code is not None:
        g = getattr(fn, "__globals__", {})
        values += [g[n] for n in _code_names(code) if n in g]
    for v in values:
        if isinstance(v, types.ModuleType):
            names.add(v.__name__)
        else:
            names.add(getattr(v, "__module__", None) or type(v).__module__)
    return {n for n in names if n}


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def roots_for(fn: Any, serializer: str, explicit: tuple[Any, ...] = ()) -> list[str]:
    """The top-level local packages to ship with calls of ``fn`` (rules 2 and 3 of the
    module doc, transitively), sorted."""
    package = getattr(fn, "__module__", "") or ""
    code = getattr(fn, "__code__", None)
    wanted = set(_imports(code, package.rpartition(".")[0]) if code is not None else ())
    if serializer != "cloudpickle":
        wanted |= _referenced_modules(fn)
    roots = {r for r in map(_local_root, wanted) if r}
    for m in explicit:
        name = m if isinstance(m, str) else getattr(m, "__name__", None)
        if not isinstance(name, str) or root_of(name) is None and _local_root(name) is None \
                and importlib.util.find_spec(name.partition(".")[0]) is None:
            raise ConfigurationError(f"modules=: {m!r} is not an importable module")
        roots.add(name.partition(".")[0])
    todo, seen = list(roots), set(roots)
    while todo:  # what the shipped sources import, if local too
        for src in _sources(todo.pop()).values():
            for name in src.imports:
                root = _local_root(name)
                if root and root not in seen:
                    seen.add(root)
                    todo.append(root)
    return sorted(seen)


# ---------------------------------------------------------------- the sources


class _Source:
    __slots__ = ("text", "path", "package", "imports")

    def __init__(self, text: str, path: str, package: bool, imports: frozenset[str]):
        self.text, self.path, self.package, self.imports = text, path, package, imports


def _files(root: str) -> dict[str, tuple[str, bool]]:
    """``{module name: (file, is package)}`` of a top-level module or package."""
    spec = importlib.util.find_spec(root)
    if spec is None or not isinstance(spec.origin, str):
        raise ConfigurationError(f"cannot ship {root!r}: no source file found")
    if not spec.submodule_search_locations:
        return {root: (spec.origin, False)}
    out: dict[str, tuple[str, bool]] = {}
    for base in spec.submodule_search_locations:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames
                                 if d != "__pycache__" and not d.startswith("."))
            rel = os.path.relpath(dirpath, base)
            prefix = root if rel == "." else root + "." + rel.replace(os.sep, ".")
            for f in sorted(filenames):
                if not f.endswith(".py"):
                    continue
                if f == "__init__.py":
                    out[prefix] = (os.path.join(dirpath, f), True)
                else:
                    out[f"{prefix}.{f[:-3]}"] = (os.path.join(dirpath, f), False)
    return out


_cache: dict[str, tuple[Any, _Source]] = {}


def _sources(root: str) -> dict[str, _Source]:
    """The sources of a top-level module or package, read again only when a file's
    size or modification time changed."""
    out = {}
    for name, (path, package) in _files(root).items():
        st = os.stat(path)
        stamp = (path, st.st_mtime_ns, st.st_size)
        hit = _cache.get(name)
        if hit is None or hit[0] != stamp:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            try:
                imports = frozenset(_imports(compile(text, path, "exec"),
                                             name if package else name.rpartition(".")[0]))
            except SyntaxError:
                imports = frozenset()
            hit = _cache[name] = (stamp, _Source(text, path, package, imports))
        out[name] = hit[1]
    return out


_payloads: dict[tuple[Any, ...], dict[str, Any]] = {}


def payload(roots: list[str]) -> dict[str, Any] | None:
    """What :func:`install` gets: ``{"roots": {root: [digest, {module: [source, path,
    is_package]}]}}``; None when there is nothing to ship. The same object while no
    file changed (the function frames' cache keys on it)."""
    if not roots:
        return None
    sources = {root: _sources(root) for root in roots}
    key = tuple((n, _cache[n][0]) for r in roots for n in sources[r])
    found = _payloads.get(key)
    if found is None:
        found = _payloads[key] = _payload(roots, sources)
        while len(_payloads) > 64:
            _payloads.pop(next(iter(_payloads)))
    return found


def _payload(roots: list[str], sources: dict[str, dict[str, _Source]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    total = 0
    for root in roots:
        mods = {n: [s.text, s.path, s.package] for n, s in sources[root].items()}
        h = hashlib.blake2b(digest_size=16)
        for n in sorted(mods):
            h.update(n.encode() + b"\0" + mods[n][0].encode() + b"\0")
            total += len(mods[n][0])
        out[root] = [h.hexdigest(), mods]
    if total > MAX_SOURCE_BYTES:
        raise ConfigurationError(
            f"the local modules this call needs ({', '.join(roots)}) have "
            f"{total / 2**20:.1f} MiB of source, more than {MAX_SOURCE_BYTES // 2**20} MiB "
            "shipped with a call: install them in the server's environment instead"
        )
    return {"roots": out}


_MISSING = re.compile(r"No module named '([\w.]+)'")


def missing_module_hint(text: str) -> str | None:
    """For a server's "No module named 'x'": where ``x`` is here and how to get it
    there; None if ``text`` is not about a missing module."""
    found = _MISSING.search(text)
    if found is None:
        return None
    name = found.group(1)
    top = name.partition(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return (f"hint: {name!r} is not importable here either; if it is a package, add "
                "it to your server's environment: environment([...])")
    origin = spec.origin or "?"
    if _local_root(top):
        return (f"hint: {top!r} is your local code ({origin}); calls ship local modules "
                f"they import by name, but not this one: pass modules=[{top!r}] to "
                "zexec.remote (or Client/connect)")
    return (f"hint: {top!r} is installed here ({origin}) but not on your server: add it to "
            "your server's environment: environment([...])")


# ---------------------------------------------------------------- the server's side


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves shipped modules from their source (first on ``sys.meta_path``)."""

    def __init__(self) -> None:
        self.modules: dict[str, list[Any]] = {}  # name -> [source, path, is_package]
        self.digests: dict[str, str] = {}  # root -> digest of what is installed

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        found = self.modules.get(name)
        if found is None:
            return None
        return importlib.machinery.ModuleSpec(name, self, origin=found[1],
                                              is_package=found[2])

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        source, path, package = self.modules[module.__name__]
        module.__file__ = path
        if package:
            module.__path__ = []
        exec(compile(source, path, "exec"), module.__dict__)


_finder: _Finder | None = None


def install(data: dict[str, Any]) -> None:
    """Make the shipped modules importable; a root whose source changed since it was
    imported here is forgotten (``sys.modules``), so it is imported afresh."""
    global _finder
    if _finder is None:
        _finder = _Finder()
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
    for root, (digest, mods) in data["roots"].items():
        if _finder.digests.get(root) == digest:
            continue
        for name in [n for n in sys.modules if n == root or n.startswith(root + ".")]:
            del sys.modules[name]
        for name in [n for n in _finder.modules if n == root or n.startswith(root + ".")]:
            del _finder.modules[name]
        _finder.modules.update(mods)
        _finder.digests[root] = digest
    importlib.invalidate_caches()


class _Install:
    """Unpickles as a call of :func:`install` (before the function it comes with)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return install, (self.data,)


def _unwrap(_installed: None, fn: Any) -> Any:
    return fn


class Bundle:
    """A function with the modules it needs: pickles so that unpickling installs the
    modules, then loads the function, and returns the function itself."""

    def __init__(self, fn: Any, data: dict[str, Any]) -> None:
        self.fn = fn
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return _unwrap, (_Install(self.data), self.fn)
