"""The last stage (report.py): experiments/report/index.html, one static page (images by relative path, no server,
no network) that renders what every stage recorded in experiments/records/<stage>.json, wherever its --out-dir
put the files. The page opens with the profile figure (each model across the stress axes that ran, with
intervals) and the headline rows, then the models, what ran and what has not, then each stage's sections in
pipeline order. Each stage decides its headline and its section (core.findings): this page reads no stage's
tables, so a new stage appears here without a line changed."""
import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core import atomic, paths
from ..core.cli import SEED_UNUSED, Common, add_common_args, add_flags, flag, make_parser, params_from, run_main
from ..core.findings import PERCENT, Estimate, number
from ..core.record import RECORDS_DIR, read_records
from ..plots import profile_figure, save

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
table.headline td { white-space: nowrap; } table.headline td:last-child { white-space: normal; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.3rem 0; }
.missing { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5rem 1rem; }
.note { color: #555; font-size: 0.9rem; } .flag { color: #b00; font-weight: bold; }
nav ol { columns: 2; font-size: 0.95rem; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 0.5rem; }
.gallery details { border: 1px solid #ddd; padding: 0.3rem; font-size: 0.8rem; }
.gallery details[open] { grid-column: 1 / -1; }
.gallery summary { cursor: pointer; list-style: none; }
.gallery summary img { width: 96px; image-rendering: pixelated; display: block; }
"""


def cell_text(cell) -> str:
    """A table cell as the page prints it: an Estimate (as a record holds it) with its interval, else a number."""
    return Estimate(**cell).text() if isinstance(cell, dict) and "value" in cell else number(cell)


class Page:
    """An HTML page built from sections; images and links are made relative to the page's folder."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.parts: list[str] = []
        self.contents: list[tuple[str, str]] = []  # (anchor, title) of every section, for the table of contents

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, text: str, level: int = 2) -> None:
        if level == 2:
            anchor = f"section-{len(self.contents) + 1}"
            self.contents.append((anchor, text))
            self.add(f"<h2 id='{anchor}'>{html.escape(text)}</h2>")
        else:
            self.add(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css: str = "") -> None:
        self.add(f"<p class='{css}'>{html.escape(text)}</p>" if css else f"<p>{html.escape(text)}</p>")

    def link(self, path: Path | str) -> str:
        return html.escape(os.path.relpath(Path(path).resolve(), self.out_dir.resolve()))

    def image(self, path: Path | str, alt: str) -> bool:
        if not Path(path).is_file():
            return False
        self.add(f"<img src='{self.link(path)}' alt='{html.escape(alt)}'>")
        return True

    def table(self, columns: list[str], rows: list[list], css: str = "") -> None:
        head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell_text(cell))}</td>" for cell in row) + "</tr>"
                       for row in rows)
        self.add(f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self, title: str, header: list[str]) -> str:
        contents = "".join(f"<li><a href='#{anchor}'>{html.escape(text)}</a></li>" for anchor, text in self.contents)
        body = "\n".join([*header, f"<nav><h2>Contents</h2><ol>{contents}</ol></nav>", *self.parts])
        return (f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def in_pipeline_order(records: list[dict]) -> list[dict]:
    """The pipeline's stages in its order, then the others (study B, imports) by name."""
    order = {stage.name: position for position, stage in enumerate(paths.PIPELINE)}
    return sorted(records, key=lambda record: (order.get(record["stage"], len(order)), record["stage"]))


def model_cards(records: list[dict]) -> dict:
    """{model: its card} as the stages that read the models recorded them (the newest record wins)."""
    cards = {}
    for record in sorted(records, key=lambda record: record.get("finished", "")):
        cards.update(record.get("models") or {})
    return {tag: cards[tag] for tag in paths.RUNS if tag in cards}


def models_rows(cards: dict) -> list[list]:
    """One row per model: what it is, where its weights came from, how it is fed, its test accuracy."""
    rows = []
    for tag, card in cards.items():
        origin = card.get("origin", "")
        if card.get("weights"):
            origin += f"; weights {card['weights']} (sha256 {card.get('weights_sha256', '')[:12]})"
        elif card.get("label_smoothing") is not None:
            origin += (f"; label smoothing {card['label_smoothing']}, seed {card.get('seed')}, epoch "
                       f"{card.get('chosen_epoch')} of {card.get('epochs')}")
        accuracy = {"value": card["test_accuracy"], "low": card["test_accuracy_low95"],
                    "high": card["test_accuracy_high95"], "unit": PERCENT} if "test_accuracy" in card else ""
        rows.append([tag, card.get("arch", ""), origin,
                     f"{card.get('checkpoint', '')} (sha256 {card.get('checkpoint_sha256', '')[:12]})",
                     card.get("preprocessing") or
                     f"mean {card['normalization']['mean']}, std {card['normalization']['std']}",
                     card.get("input_size", ""), accuracy, card.get("test_images", "")])
    return rows


def not_run(records: list[dict], cards: dict) -> list[paths.Stage]:
    """The pipeline's stages without a record that apply to the models there: none that retrains a recipe when
    the models were imported, none that needs a second model when there is one."""
    done = {record["stage"] for record in records}
    imported = any("imported" in card.get("origin", "") for card in cards.values())
    pair = len(cards) != 1
    return [stage for stage in paths.PIPELINE if stage.name not in done and stage.script != "report.py"
            and not (imported and stage.models == paths.TRAINS)
            and (pair or stage.models not in (paths.PAIR, paths.IMPROVED))]


def headline_rows(records: list[dict], models: list[str]) -> list[list]:
    """The headline rows of every record in pipeline order, the profile's axes first (as in the figure above)."""
    rows = sorted((row for record in records for row in record.get("headline", [])), key=lambda row: not row["axis"])
    return [[row["figure"], *(row["values"].get(model, "") for model in models), row["n"], row["note"]]
            for row in rows]


def what_ran(records: list[dict], data_dir: Path) -> tuple[list[list], list[str]]:
    """One row per stage record, in the order they finished; and the stages whose data folder is not --data-dir."""
    rows, elsewhere = [], []
    for record in sorted(records, key=lambda record: record.get("finished", "")):
        data = record.get("data") or {}
        rows.append([record["stage"], record.get("finished", ""),
                     f"{data.get('data_dir', '')} ({data.get('train_images', '?')} train / "
                     f"{data.get('test_images', '?')} test)" if data else "",
                     record.get("device", ""), record.get("precision", ""),
                     ", ".join(str(path) for path in record["outputs"].values())])
        if data and Path(data["data_dir"]).resolve() != Path(data_dir).resolve():
            elsewhere.append(record["stage"])
    return rows, elsewhere


def tile(page: Page, item: dict, notes: list[str]) -> None:
    """One image of a gallery: closed, the image and its caption; opened, every other figure in its folder."""
    folder = Path(item["folder"])
    flag = f" <span class='flag'>{html.escape(item['flag'])}</span>" if item.get("flag") else ""
    caption = "; ".join(html.escape(text) for text in [item["caption"], *notes])
    page.add("<details><summary>")
    page.image(folder / "image.png", f"{item['key']} image")
    page.add(f"{caption}{flag}</summary>")
    for figure in sorted(folder.glob("*.png")):
        if figure.name != "image.png":
            page.image(figure, f"{item['key']} {figure.stem}")
    page.add("</details>")


def section(page: Page, content: dict, tile_notes: dict[str, list[str]]) -> None:
    """A stage's section: its title, leading figure, compact tables, notes, more figures, full tables, gallery."""
    page.heading(content["title"])
    if content.get("lead"):
        page.image(content["lead"]["path"], content["lead"]["caption"])
    for table in content.get("tables", []):
        if table.get("note"):
            page.paragraph(table["note"], "note")
        page.table(table["columns"], table["rows"])
    for note in content.get("notes", []):
        page.paragraph(note, "note")
    for picture in content.get("pictures", []):
        page.image(picture["path"], picture["caption"])
    if content.get("links"):
        links = ", ".join(f"<a href='{page.link(path)}'>{html.escape(Path(path).name)}</a>"
                          for path in content["links"])
        page.add(f"<p class='note'>Full tables: {links}.</p>")
    if content.get("gallery"):
        page.add("<div class='gallery'>")
        for item in content["gallery"]:
            tile(page, item, tile_notes.get(item["key"], []))
        page.add("</div>")


@dataclass(frozen=True)
class ReportParams(Common):
    out_dir: Path = field(default=paths.REPORT_DIR, metadata=flag("where index.html goes"))
    records_dir: Path = field(default=RECORDS_DIR, metadata=flag("the stage records that say where each stage "
                                                                 "wrote"))


def summary_header(page: Page, records: list[dict], data_dir: Path) -> list[str]:
    """The top of the page: title, profile figure, headline rows, models, what ran and what has not."""
    top = Page(page.out_dir)
    top.heading("cnn-stress-testing report", 1)
    top.paragraph(f"Written {time.strftime('%Y-%m-%d %H:%M')} from the stage records. Every number comes with its "
                  "n; a difference between two single-seed models is a single-seed difference. Rates in percent, "
                  "95% intervals in brackets.", "note")
    cards = model_cards(records)
    profile = [row for record in records for row in record.get("headline", []) if row.get("axis")]
    if profile:
        save(page.out_dir / "profile.png", profile_figure(profile))
        top.image(page.out_dir / "profile.png", "each model across the stress axes")
    top.heading("Summary", 3)
    models = list(cards) or list(dict.fromkeys(model for record in records for row in record.get("headline", [])
                                               for model in row["values"]))
    rows = headline_rows(records, models)
    if rows:
        top.table(["figure", *models, "n", "note"], rows, "headline")
    else:
        top.paragraph("No headline figures yet: run the pipeline (python run_pipeline.py).", "note")
    if cards:
        top.heading("Models", 3)
        top.table(["model", "architecture", "origin", "checkpoint", "preprocessing", "input size",
                   "test accuracy", "n"], models_rows(cards))
    ran, elsewhere = what_ran(records, data_dir)
    top.heading("What ran", 3)
    if ran:
        top.table(["stage", "finished", "data", "device", "precision", "outputs"], ran)
    else:
        top.paragraph("No stage has left a record here yet.", "note")
    if elsewhere:
        top.add(f"<p class='flag'>{html.escape(', '.join(elsewhere))} ran on other data than --data-dir "
                f"{html.escape(str(data_dir))}: their figures do not describe it.</p>")
    missing = not_run(records, cards)
    if missing:
        commands = ", ".join(f"<code>python {html.escape(stage.script)}</code>" for stage in missing)
        top.add(f"<div class='missing'>Not run yet: {commands}.</div>")
    return top.parts


def write_report(params: ReportParams) -> Path:
    out_dir = atomic.ensure_writable_dir(params.out_dir)
    records = in_pipeline_order(read_records("", params.records_dir))
    page = Page(out_dir)
    tile_notes: dict[str, list[str]] = {}
    for record in records:
        for key, note in (record.get("tile_notes") or {}).items():
            tile_notes.setdefault(key, []).append(note)
    for record in records:
        for content in record.get("sections", []):
            section(page, content, tile_notes)
    target = out_dir / "index.html"
    atomic.write_text(target, page.render("cnn-stress-testing report", summary_header(page, records,
                                                                                        params.data_dir)))
    return target


def main(description: str | None, argv: list[str] | None = None) -> None:
    defaults = ReportParams()
    parser = make_parser(description)
    add_common_args(parser, seed_help=SEED_UNUSED + " (nor does the report run a model: --device is unused too)")
    add_flags(parser, defaults)
    args = parser.parse_args(argv)
    params = params_from(args, defaults)
    run_main(lambda: print(f"report -> {write_report(params)}"), args.debug)
