"""Reference thumbnails on hover over Plotly scatter points, and the same reference ringed in the other map.

Plotly hover labels cannot show images (plotly.js #1323), so this Streamlit v2 component (JavaScript in the
app page, no iframe) listens to `plotly_hover` on every chart whose ``layout.meta`` is
`app.figures.REFERENCE_POINTS` and shows the thumbnail of the hovered point's ``customdata`` (a reference
position) beside the cursor. Every other such chart (the neuron page's second UMAP) gets a ring around its
point with the same customdata, placed from the chart's own axes (``_fullLayout.xaxis.l2p``), so a reference
can be followed from the PURE map to the activation map and back. The thumbnails are sent once per neuron
page, not with every k redraw.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from app.figures import REFERENCE_POINTS

_JS = """
export default function (component) {
    const thumbnails = component.data.thumbnails;
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
    const twins = (chart) => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(
        (other) => other !== chart && other.layout && other.layout.meta === '%META%');
    const ringTwins = (chart, reference) => {
        for (const other of twins(chart)) {
            const ring = ringOf(other);
            ring.style.display = 'none';
            const layout = other._fullLayout;
            for (const trace of other._fullData || []) {
                const at = Array.from(trace.customdata || []).findIndex((value) => value === reference);
                if (at < 0 || !layout) continue;
                const box = other.getBoundingClientRect();
                const x = layout.xaxis._offset + layout.xaxis.l2p(trace.x[at]);
                const y = layout.yaxis._offset + layout.yaxis.l2p(trace.y[at]);
                ring.style.left = (box.left + x) + 'px';
                ring.style.top = (box.top + y) + 'px';
                ring.dataset.reference = String(reference);
                ring.style.display = 'block';
                break;
            }
        }
    };
    const hide = () => {
        tip.style.display = 'none';
        rings.forEach((ring) => { ring.style.display = 'none'; });
    };
    const hook = (chart) => {
        if (chart.__pureHoverThumbnails || typeof chart.on !== 'function') return;
        chart.__pureHoverThumbnails = true;
        chart.on('plotly_hover', (event) => {
            if (!chart.layout || chart.layout.meta !== '%META%') return;
            const point = event.points && event.points[0];
            const src = point && window.__pureHoverThumbnails[point.customdata];
            if (!src) return hide();
            ringTwins(chart, point.customdata);
            const x = event.event.clientX, y = event.event.clientY;
            tip.src = src;
            tip.style.left = Math.min(x + 18, window.innerWidth - 124) + 'px';
            tip.style.top = Math.max(y - 124, 4) + 'px';
            tip.style.display = 'block';
        });
        chart.on('plotly_unhover', hide);
    };
    window.__pureHoverThumbnails = thumbnails;
    if (window.__pureHoverObserver) window.__pureHoverObserver.disconnect();
    const observer = new MutationObserver(() => document.querySelectorAll('.js-plotly-plot').forEach(hook));
    observer.observe(document.body, {childList: true, subtree: true});
    window.__pureHoverObserver = observer;
    document.querySelectorAll('.js-plotly-plot').forEach(hook);
    return () => { observer.disconnect(); hide(); rings.forEach((ring) => ring.remove()); };
}
""".replace("%META%", REFERENCE_POINTS)

_component = st.components.v2.component("pure_explorer.hover_thumbnails", js=_JS)


def hover_thumbnails(thumbnail_uris: Sequence[str], key: str) -> None:
    """Show ``thumbnail_uris[i]`` (data URIs) when the cursor is on a point with customdata ``i`` of any
    chart on the page whose layout.meta is `REFERENCE_POINTS`."""
    _component(data={"thumbnails": list(thumbnail_uris)}, key=key)
