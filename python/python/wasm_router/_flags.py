"""``Router(**settings)`` keyword arguments as router flags. The flags are
the native router's own (``_native.flags()``, declared once in
``host/src/config/args.rs``): a keyword is a flag's long name with
underscores (``cache_threshold=0.5`` is ``--cache-threshold 0.5``), and the
router's parser and validation check the values (``_native.check``)."""

from . import _native

# name -> (flag, switch, max_values, value_names)
FLAGS = {name: (flag, switch, max_values, names) for name, flag, switch, max_values, names in _native.flags()}

NAMES = set(FLAGS)

def _values(name, value):
    """A list setting's occurrences: a flag taking one value per occurrence
    gets one per item; one taking several (``--prefill URL [PORT]``) gets a
    group per item that is a list, and its items in one occurrence
    otherwise."""
    _, _, max_values, names = FLAGS[name]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        what = f"{names[0]}s" if names else "values"
        if len(names) > 1:
            what += f" or [{', '.join(names)}] groups"
        raise ValueError(f"{name} must be a list of {what}, got {value!r}")
    if max_values == 1:
        return [[str(v)] for v in value]
    if any(isinstance(v, (list, tuple)) for v in value):
        return [[str(v) for v in (item if isinstance(item, (list, tuple)) else [item])] for item in value]
    return [[str(v) for v in value]] if value else []

def to_argv(settings):
    """Router argv from ``Router(...)`` keyword arguments (``None`` and
    ``False`` are left out); unknown keywords raise ``ValueError``."""
    argv = []
    for name, value in settings.items():
        if name not in FLAGS:
            raise ValueError(f"unknown router setting {name!r}; known: {', '.join(sorted(NAMES))}")
        flag, switch, max_values, _ = FLAGS[name]
        if value is None or value is False:
            continue
        if switch:
            if value is not True:
                raise ValueError(f"{name} must be True or False, got {value!r}")
            argv.append(flag)
        elif max_values > 1 or isinstance(value, (list, tuple)):
            for values in _values(name, value):
                argv += [flag, *values]
        else:
            argv += [flag, str(value)]
    return argv
