"""What a browser check of the built-in viewer looks for (the browser test and `python -m proxymage_dev.bench.viewer`).

- **An image is drawn**: a cornerstone viewport canvas of OHIF (`canvas.cornerstone-canvas`, a 2D canvas the
  rendering engine copies each rendered frame into) whose pixels are not all the same colour. A blank or
  still-loading viewport is uniform (black); a drawn CT slice is not.
- **No control that writes**: nothing on the page (buttons, links, menu items, their labels and tooltips)
  offers to delete, upload/import, anonymise, send studies or store a report (an SR written back to the store):
  the viewer is for reading in the meeting.
"""

from __future__ import annotations

import re
from typing import Final

# Returns true when some viewport canvas holds a non-uniform image (sampled on a grid: enough to tell a
# drawn slice from a blank viewport, cheap enough to poll every animation frame).
IMAGE_DRAWN_JS: Final = """
() => {
  for (const canvas of document.querySelectorAll('canvas.cornerstone-canvas')) {
    if (canvas.width < 32 || canvas.height < 32) continue;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    if (!context) continue;
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    const step = 4 * 97;  // a prime stride through the RGBA bytes
    for (let i = step; i < data.length; i += step) {
      if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) return true;
    }
  }
  return false;
}
"""

# Every label a user can act on: visible text of actionable elements, their aria-label, title and
# data-cy (OHIF's test ids name the tool, e.g. "delete", "upload").
CONTROL_LABELS_JS: Final = """
() => {
  const actionable = 'button, a, [role="button"], [role="menuitem"], [role="option"], [role="tab"], '
    + 'input, select, label, [data-cy], [title], [aria-label]';
  const labels = [];
  for (const element of document.querySelectorAll(actionable)) {
    for (const value of [element.innerText, element.getAttribute('aria-label'), element.getAttribute('title'),
                         element.getAttribute('data-cy'), element.getAttribute('value')]) {
      if (value && value.trim()) labels.push(value.trim().replace(/\\s+/g, ' '));
    }
  }
  return labels;
}
"""

# French and English words for the controls the viewer must not offer.
FORBIDDEN_CONTROL: Final = re.compile(
    r"delete|remove stud|supprim|effac|upload|import|t[ée]l[ée]vers|stow|anonymi|pseudonymi|send to|"
    r"envoyer vers|reject|rejet|create report|cr[ée]er un rapport|save report|enregistrer (le|un) rapport",
    re.IGNORECASE,
)


def forbidden_controls(labels: list[str]) -> list[str]:
    """The labels that name a control which would change or export the store's studies."""
    return sorted({label for label in labels if FORBIDDEN_CONTROL.search(label)})
