"""`python <pack-dir> run WORKFLOW.json` / `python -m humangen run WORKFLOW.json`: the headless workflow runner."""
import sys

if __package__:  # python -m humangen (installed as a package)
    from .runner.cli import main
else:  # python <pack-dir>: load the folder as the package `humangen`, whatever it is called
    import importlib.util
    import os

    _root = os.path.dirname(os.path.abspath(__file__))
    # `python <dir>` puts <dir> on sys.path, where our `utils`/`models` folders would shadow other packages.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _root]
    if "humangen" not in sys.modules:
        _spec = importlib.util.spec_from_file_location(
            "humangen", os.path.join(_root, "__init__.py"), submodule_search_locations=[_root])
        _pack = importlib.util.module_from_spec(_spec)
        sys.modules["humangen"] = _pack
        _spec.loader.exec_module(_pack)
    from humangen.runner.cli import main

if __name__ == "__main__":
    sys.exit(main())
