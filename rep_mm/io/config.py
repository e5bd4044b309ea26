"""Loading a config file with errors that name the file, the line and the cause."""
from __future__ import annotations

import ast
import os
from typing import Any, Optional

from .errors import ConfigError, first_line

__all__ = ['ConfigError', 'load_config_file']


def _assignment_line(path: str, name: str) -> Optional[int]:
    """The line of the top-level assignment to ``name`` in the config ``path``, if any."""
    try:
        with open(path, encoding='utf-8') as stream:
            tree = ast.parse(stream.read())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node.lineno
    return None


def _traceback_line(error: BaseException, path: str) -> Optional[int]:
    """The last line of ``path`` in the traceback of ``error`` (the config's own code)."""
    tb = error.__traceback__
    line = None
    real = os.path.realpath(path)
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _read_checked(path: str, what: str) -> str:
    """The text of the config ``path``: it exists, is UTF-8 and (``.py``) valid Python."""
    if not os.path.exists(path):
        raise ConfigError(f'{what} {path!r} does not exist')
    if not os.path.isfile(path):
        raise ConfigError(f'{what} {path!r} is not a file')
    try:
        with open(path, encoding='utf-8') as stream:
            text = stream.read()
    except UnicodeDecodeError as error:
        raise ConfigError(f'{what} {path!r} is not UTF-8 text (byte {error.start})') from None
    except OSError as error:
        raise ConfigError(f'{what} {path!r} cannot be read: {error.strerror}') from None
    if path.endswith('.py'):
        try:
            compile(text, path, 'exec', dont_inherit=True)
        except SyntaxError as error:
            raise ConfigError(f'{what} {path!r}, line {error.lineno}: syntax error: '
                              f'{error.msg}') from None
        except ValueError as error:  # e.g. null bytes
            raise ConfigError(f'{what} {path!r}: not a Python file ({error})') from None
    return text


def _import_failure(path: str, text: str, what: str, error: ImportError) -> ConfigError:
    """A ``custom_imports`` module that cannot be imported, with the line of ``custom_imports``."""
    line = _assignment_line(path, 'custom_imports')
    where = f', line {line}' if line else ''
    missing, link = None, error  # mmengine re-raises without the module name: follow causes
    while link is not None and missing is None:
        missing = getattr(link, 'name', None)
        link = link.__cause__ or link.__context__
    if missing and (f"'{missing}'" in text or f'"{missing}"' in text):
        cause = f'custom_imports names module {missing!r}, which cannot be imported'
    elif missing:
        cause = f'a module imported through custom_imports needs {missing!r}, not installed'
    else:
        cause = f'custom_imports failed: {first_line(str(error))}'
    return ConfigError(f'{what} {path!r}{where}: {cause}; install the plugin or fix the '
                       f'module name')


def load_config_file(path: str, what: str = 'config') -> Any:
    """``mmengine.Config.fromfile(path)`` with one-line errors naming the file, line and cause.

    Checks the file itself first (exists, is a file, readable, UTF-8, valid Python syntax,
    for ``.py`` configs), so a typo is reported as ``config 'x.py', line 3: syntax error: ...``;
    a ``custom_imports`` module that cannot be imported is reported with the line of
    ``custom_imports``; a missing ``_base_`` file with the line of ``_base_``.

    Raises:
        ConfigError: any of the above.
    """
    from mmengine.config import Config
    path = os.fspath(path)
    text = _read_checked(path, what)
    try:
        return Config.fromfile(path)
    except ImportError as error:
        raise _import_failure(path, text, what, error) from None
    except FileNotFoundError as error:
        line = _assignment_line(path, '_base_')
        where = f', line {line}' if line else ''
        raise ConfigError(f'{what} {path!r}{where}: a base config is missing: '
                          f'{first_line(str(error))}') from None
    except SyntaxError as error:  # a _base_ file with a syntax error (mmengine's message)
        raise ConfigError(f'{what} {path!r}: {first_line(str(error))}') from None
    except Exception as error:  # noqa: BLE001 - executing the config's own code; re-raised
        line = _traceback_line(error, path)
        if line is None:
            raise
        raise ConfigError(f'{what} {path!r}, line {line}: {type(error).__name__}: '
                          f'{first_line(str(error))}') from None
