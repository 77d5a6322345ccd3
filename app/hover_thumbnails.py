"""Reference thumbnails on hover over the UMAP points, and the same reference ringed in the other map.

A Vega-Lite tooltip shows text only, so this Streamlit v2 component (JavaScript in the app page, no iframe)
watches the pointer over the page's Vega-Lite charts. Streamlit draws a chart of fewer than 2,000 points as
SVG, and Vega keeps each point's scene item, whose ``datum`` is the point's row, on its SVG node; a point
whose row has the `app.umap_charts.REFERENCE` field (a reference position) gets that reference's thumbnail
beside the cursor. Every other such chart (the neuron page's second UMAP) gets a ring around its point with
the same reference, so a reference can be followed from the PURE map to the activation map and back. The
thumbnails are sent once per neuron page, not with every k redraw.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from app.umap_charts import REFERENCE

_JS = """
export default function (component) {
    window.__pureHoverThumbnails = component.data.thumbnails;
    let tip = document.getElementById('pure-hover-thumbnail');
    if (!tip) {
        tip = document.createElement('img');
        tip.id = 'pure-hover-thumbnail';
        tip.alt = 'reference thumbnail';
        Object.assign(tip.style, {
            position: 'fixed', zIndex: 100000, width: '112px', height: '112px', display: 'none',
            pointerEvents: 'none', border: '2px solid white', borderRadius: '4px',
            boxShadow: '0 2px 8px rgba(0,0,0,0.35)', background: 'white',
        });
        document.body.appendChild(tip);
    }
    const CHART = '[data-testid="stVegaLiteChart"]';
    const rings = new Map();  // chart -> its ring element
    const ringOf = (chart) => {
        if (!rings.has(chart)) {
            const ring = document.createElement('div');
            ring.className = 'pure-twin-ring';
            Object.assign(ring.style, {
                position: 'fixed', zIndex: 99999, width: '22px', height: '22px', display: 'none',
                pointerEvents: 'none', border: '3px solid black', borderRadius: '50%',
                boxShadow: '0 0 0 2px white', transform: 'translate(-50%, -50%)',
            });
            document.body.appendChild(ring);
            rings.set(chart, ring);
        }
        return rings.get(chart);
    };
    // the reference position of a point's SVG node (Vega's scene item -> its row), else undefined
    const referenceOf = (node) => {
        const datum = node && node.__data__ && node.__data__.datum;
        return datum && Number.isInteger(datum['%FIELD%']) ? datum['%FIELD%'] : undefined;
    };
    const ringTwins = (chart, reference) => {
        for (const other of document.querySelectorAll(CHART)) {
            if (other === chart) continue;
            const ring = ringOf(other);
            ring.style.display = 'none';
            const point = Array.from(other.querySelectorAll('.mark-symbol path'))
                .find((node) => referenceOf(node) === reference);
            if (!point) continue;
            const box = point.getBoundingClientRect();
            ring.style.left = (box.left + box.width / 2) + 'px';
            ring.style.top = (box.top + box.height / 2) + 'px';
            ring.dataset.reference = String(reference);
            ring.style.display = 'block';
        }
    };
    let shown;  // the reference whose thumbnail is up
    const hide = () => {
        shown = undefined;
        tip.style.display = 'none';
        rings.forEach((ring) => { ring.style.display = 'none'; });
    };
    const move = (event) => {
        const chart = event.target.closest ? event.target.closest(CHART) : null;
        const reference = chart ? referenceOf(event.target) : undefined;
        const src = reference !== undefined && window.__pureHoverThumbnails[reference];
        if (!src) {
            if (shown !== undefined) hide();
            return;
        }
        if (reference !== shown) {
            shown = reference;
            tip.src = src;
            ringTwins(chart, reference);
        }
        tip.style.left = Math.min(event.clientX + 18, window.innerWidth - 124) + 'px';
        tip.style.top = Math.max(event.clientY - 124, 4) + 'px';
        tip.style.display = 'block';
    };
    if (window.__pureHoverMove) document.removeEventListener('pointermove', window.__pureHoverMove);
    window.__pureHoverMove = move;
    document.addEventListener('pointermove', move, {passive: true});
    return () => {
        document.removeEventListener('pointermove', move);
        hide();
        rings.forEach((ring) => ring.remove());
    };
}
""".replace("%FIELD%", REFERENCE)

_component = st.components.v2.component("pure_explorer.hover_thumbnails", js=_JS)


def hover_thumbnails(thumbnail_uris: Sequence[str], key: str) -> None:
    """Show ``thumbnail_uris[i]`` (data URIs) when the cursor is on a point of reference position ``i`` of any
    Vega-Lite chart on the page whose rows carry `REFERENCE`."""
    _component(data={"thumbnails": list(thumbnail_uris)}, key=key)
