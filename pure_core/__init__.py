"""PURE core: the method as a library (no UI, no storage).

Submodules: `models` (build models, resolve layers), `activations` (hooks, reference selection),
`attribution` (PURE circuit attributions, input heatmaps), `virtual` (virtual neurons), `crops`, `embed`,
`scores`, `world` / `demo` (the synthetic world). Import them directly; this package imports nothing heavy.
"""

__version__ = "0.1.0"
