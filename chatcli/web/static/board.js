// The shared whiteboard (protocol v1.1 section 4): the room's shapes as the server
// says they are (BoardModel), how they look on a canvas (drawShape), and the tools that
// turn pointer gestures into draw / erase / move frames (BoardView).
//
// The model changes only on the server's frames (ready.board, draw, erase, move,
// clear): what the page shows is what the server keeps. A shape being drawn, or sent
// and not yet echoed, is a local preview, never part of the model.

/** The board's coordinate space: 1000 x 1000 units, origin top left. */
export const SIZE = 1000;
/** Points a pencil stroke may have (the spec's bound). */
export const MAX_POINTS = 2000;
/** Units a pointer must be from a shape to hit it, beyond half its stroke width. */
const HIT_SLOP = 8;

export const KINDS = ["pencil", "line", "rect", "oval", "text"];

/** The font size of a text shape, in board units: as replay --board draws it (board_svg.text_size). */
export function fontSize(width) {
  return 10 + 4 * width;
}

const clampUnit = (v) => Math.min(SIZE, Math.max(0, v));

/** The board state: shapes by id, changed only by the server's frames. */
export class BoardModel {
  constructor() {
    /** @type {Map<number, {id:number, from:string, shape:object}>} */
    this.shapes = new Map();
    this.room = null;
    this.listeners = new Set();
  }

  /** `ready.board`: the room's shapes, in id order, with their latest positions. */
  reset(room, draws) {
    this.room = room;
    this.shapes.clear();
    for (const draw of draws || []) this.add(draw);
    this.changed();
  }

  add(draw) {
    if (typeof draw.id !== "number" || !draw.shape) return;
    const shape = { ...draw.shape, points: (draw.shape.points || []).map((p) => [p[0], p[1]]) };
    this.shapes.set(draw.id, { id: draw.id, from: draw.from, shape });
  }

  /** Apply one board frame from the server; true when it was one. */
  apply(frame) {
    switch (frame.type) {
      case "draw":
        this.add(frame);
        break;
      case "erase":
        this.shapes.delete(frame.id);
        break;
      case "move": {
        const entry = this.shapes.get(frame.id);
        if (entry) {
          entry.shape.points = entry.shape.points.map(([x, y]) => [
            clampUnit(x + frame.dx), clampUnit(y + frame.dy),
          ]);
        }
        break;
      }
      case "clear":
        if (frame.all) this.shapes.clear();
        else for (const [id, e] of this.shapes) if (e.from === frame.by) this.shapes.delete(id);
        break;
      default:
        return false;
    }
    this.changed();
    return true;
  }

  /** Shapes in id order (drawing order). */
  ordered() {
    return [...this.shapes.values()].sort((a, b) => a.id - b.id);
  }

  /** A plain copy for tests and debugging: [{id, from, kind, points, color, width, text}]. */
  snapshot() {
    return this.ordered().map(({ id, from, shape }) => ({
      id, from, ...JSON.parse(JSON.stringify(shape)),
    }));
  }

  onChange(listener) {
    this.listeners.add(listener);
  }

  changed() {
    for (const listener of this.listeners) listener();
  }
}

/** Draw one shape on a context already scaled to board units. */
export function drawShape(ctx, shape, { alpha = 1, dx = 0, dy = 0 } = {}) {
  const pts = shape.points.map(([x, y]) => [x + dx, y + dy]);
  if (pts.length === 0) return;
  ctx.save();
  ctx.globalAlpha = alpha;
  ctx.strokeStyle = shape.color;
  ctx.fillStyle = shape.color;
  ctx.lineWidth = shape.width;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  const [a, b] = [pts[0], pts[pts.length - 1]];
  ctx.beginPath();
  switch (shape.kind) {
    case "pencil":
    case "line":
      ctx.moveTo(a[0], a[1]);
      for (const p of pts.slice(1)) ctx.lineTo(p[0], p[1]);
      ctx.stroke();
      break;
    case "rect":
      ctx.strokeRect(Math.min(a[0], b[0]), Math.min(a[1], b[1]),
        Math.abs(b[0] - a[0]), Math.abs(b[1] - a[1]));
      break;
    case "oval":
      ctx.ellipse((a[0] + b[0]) / 2, (a[1] + b[1]) / 2,
        Math.abs(b[0] - a[0]) / 2, Math.abs(b[1] - a[1]) / 2, 0, 0, 2 * Math.PI);
      ctx.stroke();
      break;
    case "text":
      ctx.font = `${fontSize(shape.width)}px sans-serif`;
      ctx.textBaseline = "alphabetic";
      ctx.fillText(shape.text || "", a[0], a[1]);
      break;
    default:
      break;
  }
  ctx.restore();
}

function segmentDistance(p, a, b) {
  const [px, py] = p;
  const [ax, ay] = a;
  const [bx, by] = b;
  const lx = bx - ax;
  const ly = by - ay;
  const len2 = lx * lx + ly * ly;
  const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, ((px - ax) * lx + (py - ay) * ly) / len2));
  return Math.hypot(px - (ax + t * lx), py - (ay + t * ly));
}

/** Whether board point `p` touches `shape` (its stroke, or inside a rect/oval/text box). */
export function hits(shape, p) {
  const pts = shape.points;
  const slop = shape.width / 2 + HIT_SLOP;
  const [a, b] = [pts[0], pts[pts.length - 1]];
  switch (shape.kind) {
    case "pencil":
    case "line":
      if (pts.length === 1) return Math.hypot(p[0] - a[0], p[1] - a[1]) <= slop;
      for (let i = 1; i < pts.length; i += 1) {
        if (segmentDistance(p, pts[i - 1], pts[i]) <= slop) return true;
      }
      return false;
    case "rect":
    case "oval":
      return p[0] >= Math.min(a[0], b[0]) - slop && p[0] <= Math.max(a[0], b[0]) + slop
        && p[1] >= Math.min(a[1], b[1]) - slop && p[1] <= Math.max(a[1], b[1]) + slop;
    case "text": {
      const size = fontSize(shape.width);
      const w = 0.6 * size * (shape.text || "").length;
      return p[0] >= a[0] - HIT_SLOP && p[0] <= a[0] + w + HIT_SLOP
        && p[1] >= a[1] - size - HIT_SLOP && p[1] <= a[1] + 0.3 * size + HIT_SLOP;
    }
    default:
      return false;
  }
}

/** Fewer points for a long stroke: every k-th one, the last kept. */
function thin(points) {
  if (points.length <= MAX_POINTS) return points;
  const step = Math.ceil(points.length / (MAX_POINTS - 1));
  const kept = points.filter((_, i) => i % step === 0);
  kept.push(points[points.length - 1]);
  return kept;
}

/**
 * The canvas and its tools. `send(frame)` sends a board frame (false when offline);
 * `me()` is the logged-in name, `isOp()` whether it may erase or move anyone's shapes;
 * `notify(text)` shows a one-line notice.
 */
export class BoardView {
  constructor({ canvas, model, send, me, isOp, notify }) {
    this.canvas = canvas;
    this.model = model;
    this.send = send;
    this.me = me;
    this.isOp = isOp;
    this.notify = notify;
    this.tool = "pencil";
    this.color = "#1f77b4";
    this.width = 3;
    this.text = "";
    this.gesture = null; // the stroke or drag in progress
    this.pending = new Map(); // ref -> shape sent, not yet echoed
    this.moving = new Map(); // ref -> {id, dx, dy}: a drag sent, not yet answered
    this.refs = 0;
    this.cssSize = 0;
    model.onChange(() => this.render());
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.moveTo(e));
    canvas.addEventListener("pointerup", (e) => this.up(e));
    canvas.addEventListener("pointercancel", () => this.cancel());
    const observer = new ResizeObserver(() => this.fit());
    observer.observe(canvas.parentElement);
    window.addEventListener("resize", () => this.fit());
    this.fit();
  }

  /** Size the canvas to its box, as a square, sharp on high-density screens. */
  fit() {
    const box = this.canvas.parentElement.getBoundingClientRect();
    const size = Math.max(100, Math.floor(Math.min(box.width, box.height)));
    const dpr = window.devicePixelRatio || 1;
    this.cssSize = size;
    this.canvas.style.width = `${size}px`;
    this.canvas.style.height = `${size}px`;
    this.canvas.width = Math.round(size * dpr);
    this.canvas.height = Math.round(size * dpr);
    this.render();
  }

  /** A pointer event's position in board units, clamped to the board. */
  point(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * SIZE;
    const y = ((event.clientY - rect.top) / rect.height) * SIZE;
    return [Math.round(clampUnit(x)), Math.round(clampUnit(y))];
  }

  /** The shape under `p` the tool should act on: one's own first (topmost), then any. */
  pick(p) {
    const shapes = this.model.ordered().reverse();
    const mine = shapes.find((e) => e.from === this.me() && hits(e.shape, p));
    return mine || shapes.find((e) => hits(e.shape, p)) || null;
  }

  down(event) {
    if (event.button !== undefined && event.button > 0) return;
    event.preventDefault();
    this.canvas.setPointerCapture?.(event.pointerId);
    const p = this.point(event);
    if (this.tool === "eraser") {
      const target = this.pick(p);
      if (target) this.request({ type: "erase", id: target.id }, target);
      return;
    }
    if (this.tool === "drag") {
      const target = this.pick(p);
      if (target) this.gesture = { kind: "drag", id: target.id, start: p, at: p, target };
      return;
    }
    if (this.tool === "text") {
      const text = this.text.trim();
      if (!text) {
        this.notify("type the text in the box beside the tools first");
        return;
      }
      this.submit({ kind: "text", points: [p], color: this.color, width: this.width, text });
      return;
    }
    this.gesture = { kind: this.tool, points: [p] };
  }

  moveTo(event) {
    const g = this.gesture;
    if (!g) return;
    const p = this.point(event);
    if (g.kind === "drag") g.at = p;
    else if (g.kind === "pencil") {
      const last = g.points[g.points.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 2) g.points.push(p);
    } else g.points[1] = p;
    this.render();
  }

  up(event) {
    const g = this.gesture;
    if (!g) return;
    this.moveTo(event);
    this.gesture = null;
    if (g.kind === "drag") {
      const dx = g.at[0] - g.start[0];
      const dy = g.at[1] - g.start[1];
      if (dx !== 0 || dy !== 0) {
        this.refs += 1;
        const ref = `v-${this.refs}`;
        // the shape stays where it was dropped until the server's answer (no snap back)
        if (this.request({ type: "move", id: g.id, dx, dy, ref }, g.target)) {
          this.moving.set(ref, { id: g.id, dx, dy });
        }
      }
      this.render();
      return;
    }
    let points = g.points;
    if (points.length === 1) points = [points[0], points[0]];
    if (g.kind === "pencil") points = thin(points);
    this.submit({ kind: g.kind, points, color: this.color, width: this.width });
  }

  cancel() {
    this.gesture = null;
    this.render();
  }

  /** Erase or move: the server decides (only one's own shapes, operators any). */
  request(frame, target) {
    if (target.from !== this.me() && !this.isOp()) {
      this.notify(`that shape is ${target.from}'s: the server allows erasing or moving only your own`);
    }
    if (this.send(frame)) return true;
    this.notify("not connected: the board cannot change now");
    return false;
  }

  /** Send a finished shape; it shows faintly until the server's draw comes back. */
  submit(shape) {
    this.refs += 1;
    const ref = `d-${this.refs}`;
    if (!this.send({ type: "draw", shape, ref })) {
      this.notify("not connected: the shape was not sent");
      this.render();
      return;
    }
    this.pending.set(ref, shape);
    this.render();
  }

  /** The server answered a frame of ours (its draw echo or an error): drop the preview. */
  settle(ref) {
    if (!ref) return;
    const draw = this.pending.delete(ref);
    const move = this.moving.delete(ref);
    if (draw || move) this.render();
  }

  /** A move of shape `id` arrived: whatever drag of it was waiting is answered. */
  moved(id) {
    for (const [ref, m] of this.moving) if (m.id === id) this.moving.delete(ref);
  }

  /** Forget previews (a new connection or room: nothing in flight survives it). */
  forget() {
    this.pending.clear();
    this.moving.clear();
    this.gesture = null;
    this.render();
  }

  render() {
    const ctx = this.canvas.getContext("2d");
    const scale = this.canvas.width / SIZE;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(scale, 0, 0, scale, 0, 0);
    const g = this.gesture;
    const offsets = new Map([...this.moving.values()].map((m) => [m.id, m]));
    if (g?.kind === "drag") offsets.set(g.id, { dx: g.at[0] - g.start[0], dy: g.at[1] - g.start[1] });
    for (const entry of this.model.ordered()) {
      const offset = offsets.get(entry.id);
      if (offset) {
        drawShape(ctx, entry.shape, { alpha: 0.25 });
        drawShape(ctx, entry.shape, offset);
      } else drawShape(ctx, entry.shape);
    }
    for (const shape of this.pending.values()) drawShape(ctx, shape, { alpha: 0.5 });
    if (g && g.kind !== "drag" && g.points.length > (g.kind === "pencil" ? 0 : 1)) {
      drawShape(ctx, { kind: g.kind, points: g.points, color: this.color, width: this.width });
    }
  }
}
