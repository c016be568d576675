"""The headless workflow runner: `python <pack-dir> run WORKFLOW.json` (see cli.py and the README).

workflow.py loads API/UI workflows (UI -> API conversion), engine.py validates and executes prompts in-process,
core_nodes.py has the core-compatible image nodes, remote.py runs jobs on ComfyUI servers. Not imported by the
pack itself, so it costs nothing when ComfyUI loads the nodes.
"""
