"""Reference grids as tiles that keep their size and open a reference when clicked.

A grid drawn into one JPEG is scaled down with its container, so on a phone a 16-column sheet became 20 px
tiles; here each reference is its own tile of ``tile_px`` (from the stored thumbnail size) in a wrapping
row, so a narrow screen gets fewer tiles per row instead of smaller ones (never under 40 px). The tiles are a
Streamlit v2 component (JavaScript in the app page, no iframe): a click reports the tile's reference
position back to Python, which opens it large. Captions are set as text, never parsed as HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import streamlit as st

MIN_TILE_PX = 40

_CSS = f"""
.pure-tiles {{ display: flex; flex-wrap: wrap; gap: 4px; }}
.pure-tile {{
    width: var(--tile-px); min-width: {MIN_TILE_PX}px; max-width: calc(50% - 4px); padding: 0; margin: 0;
    border: 1px solid transparent; border-radius: 3px; background: none; cursor: zoom-in;
    display: flex; flex-direction: column; align-items: center; font: 11px sans-serif; color: #555;
}}
.pure-tile img {{ width: 100%; aspect-ratio: 1; object-fit: contain; display: block; }}
.pure-tile:hover, .pure-tile:focus-visible {{ border-color: #888; }}
"""

_JS = """
export default function (component) {
    const { data, parentElement, setTriggerValue } = component;
    let grid = parentElement.querySelector('.pure-tiles');
    if (!grid) {
        grid = document.createElement('div');
        grid.className = 'pure-tiles';
        parentElement.appendChild(grid);
    }
    grid.style.setProperty('--tile-px', data.tile_px + 'px');
    grid.replaceChildren(...data.tiles.map((tile) => {
        const button = document.createElement('button');
        button.type = 'button';
        button.className = 'pure-tile';
        button.dataset.reference = String(tile.reference);
        const detail = tile.detail ? ' (' + tile.detail + ')' : '';
        button.title = 'Open reference ' + tile.caption + ' large' + detail;
        const image = document.createElement('img');
        image.src = tile.src;
        image.alt = 'reference ' + tile.caption;
        const caption = document.createElement('span');
        caption.textContent = tile.caption;
        button.append(image, caption);
        button.addEventListener('click', () => setTriggerValue('opened', tile.reference));
        return button;
    }));
}
"""

_component = st.components.v2.component("pure_explorer.reference_tiles", css=_CSS, js=_JS)


@dataclass(frozen=True)
class Tile:
    """One reference in a grid: its thumbnail as a data URI, its caption, its position (0-based) and a detail
    for its tooltip (its labels; set as text, never parsed)."""

    src: str
    caption: str
    reference: int
    detail: str = ""


def reference_tiles(tiles: Sequence[Tile], tile_px: int, key: str) -> int | None:
    """Draw ``tiles`` at ``tile_px`` each; the position of the tile clicked since the last run, else None."""
    result = _component(
        data={"tiles": [asdict(t) for t in tiles], "tile_px": max(int(tile_px), MIN_TILE_PX)},
        key=key,
        on_opened_change=lambda: None,
    )
    opened = getattr(result, "opened", None)
    return None if opened is None else int(opened)
