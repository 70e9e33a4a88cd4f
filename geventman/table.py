"""Plain-text tables for the commands (start, status, connections).

Every column is as wide as its longest cell, header included, so a long worker
name, listen address or pid is never cut and never runs into the next column:
people and scripts split these tables on whitespace and grep them by name.
"""
GAP = 2  # spaces between two columns


def cell(value):
    return "N/A" if value is None else str(value)


def format_rows(header, rows):
    """The header line and one line per row, each column padded to its widest cell."""
    texts = [[cell(value) for value in row] for row in [header] + list(rows)]
    widths = [max(len(row[i]) for row in texts if i < len(row)) for i in range(len(header))]
    return [_line(row, widths) for row in texts]


def _line(cells, widths):
    padded = [text.ljust(width + GAP) for text, width in zip(cells[:-1], widths)]
    return ("".join(padded) + cells[-1]).rstrip()


def title(text, width):
    """``-----TITLE-----`` as wide as ``width`` (the table under it)."""
    dashes = max(width - len(text), 20)
    return "-" * (dashes // 2) + text + "-" * (dashes - dashes // 2)


def width(lines):
    return max((len(line) for line in lines), default=0)
