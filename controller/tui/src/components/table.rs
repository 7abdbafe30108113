//! A filterable, sortable table over rows the model owns. Only the rows on screen are built in
//! a frame; the view (indices of matching rows in sort order) is rebuilt only when the rows'
//! revision, the filter or the sort changed. The selection follows its row (by name) across
//! rebuilds, so a live update never makes the cursor jump to another host.

use std::cmp::Ordering;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table as TableWidget};

use super::input::TextInput;
use super::{DrawCtx, EventState};
use crate::keys::Action;
use crate::model::{RowChange, Rows};
use crate::theme::Theme;

/// More row changes than this since the last frame: a full rebuild is cheaper.
const MAX_INCREMENTAL: usize = 32;

/// What the orders were last built from.
struct Built {
    rev: u64,
    filter: String,
    sort: usize,
    desc: bool,
}

/// Applies row changes to an order's indices: removed rows leave, moved rows are renamed, and
/// changed rows leave too — returned, to be put back in their new place by [`insert`].
fn renumber(order: &mut Vec<u32>, changes: &[RowChange]) -> Vec<u32> {
    let mut dirty: Vec<u32> = Vec::new();
    let take = |order: &mut Vec<u32>, i: u32| {
        if let Some(p) = order.iter().position(|&v| v == i) {
            order.remove(p);
        }
    };
    for change in changes {
        match *change {
            RowChange::Upsert(i) => {
                take(order, i);
                if !dirty.contains(&i) {
                    dirty.push(i);
                }
            }
            RowChange::Remove { at, moved } => {
                take(order, at);
                dirty.retain(|&d| d != at);
                if let Some(m) = moved {
                    // The last row now lives at `at`.
                    if let Some(v) = order.iter_mut().find(|v| **v == m) {
                        *v = at;
                    }
                    if let Some(d) = dirty.iter_mut().find(|d| **d == m) {
                        *d = at;
                    }
                }
            }
        }
    }
    dirty
}

/// Puts the `dirty` rows that `keep` back into `order` (sorted by `cmp`) by binary search.
fn insert<T>(
    order: &mut Vec<u32>,
    items: &[T],
    dirty: &[u32],
    cmp: &impl Fn(&T, &T) -> Ordering,
    keep: impl Fn(u32) -> bool,
) {
    for &i in dirty {
        let Some(item) = items.get(i as usize) else {
            continue;
        };
        if keep(i) {
            let at = order.partition_point(|&v| cmp(&items[v as usize], item) == Ordering::Less);
            order.insert(at, i);
        }
    }
}

/// Whether rows matching `needle` are a subset of those matching `old` (a filter typed on).
fn narrows(old: &str, needle: &str) -> bool {
    needle.contains(old.trim().to_ascii_lowercase().as_str())
}

/// The rows of `sorted` that `keep`, in order.
fn filter(view: &mut Vec<u32>, sorted: &[u32], keep: impl Fn(u32) -> bool) {
    view.clear();
    view.extend(sorted.iter().copied().filter(|&i| keep(i)));
}

/// Every row's searchable text in one buffer, so a filter reads memory that is close together
/// instead of reaching into each row's strings.
#[derive(Default)]
struct SearchTexts {
    buf: String,
    /// (start, end) in `buf` by row index.
    spans: Vec<(u32, u32)>,
    /// Bytes of `buf` no row points at any more.
    garbage: usize,
}

impl SearchTexts {
    fn get(&self, i: u32) -> &str {
        self.spans
            .get(i as usize)
            .and_then(|&(a, b)| self.buf.get(a as usize..b as usize))
            .unwrap_or_default()
    }

    fn push_text<T>(&mut self, item: &T, search: fn(&T, &mut String)) -> (u32, u32) {
        let start = self.buf.len();
        search(item, &mut self.buf);
        self.buf[start..].make_ascii_lowercase();
        let span = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        (span(start), span(self.buf.len()))
    }

    fn rebuild<T>(&mut self, items: &[T], search: fn(&T, &mut String)) {
        self.buf.clear();
        self.spans.clear();
        self.garbage = 0;
        for item in items {
            let span = self.push_text(item, search);
            self.spans.push(span);
        }
    }

    /// Follows the rows' changes (indices move as in [`Rows::remove`]) and rewrites the changed.
    fn apply<T>(&mut self, changes: &[RowChange], items: &[T], search: fn(&T, &mut String)) {
        let mut dirty: Vec<u32> = Vec::new();
        for change in changes {
            match *change {
                RowChange::Upsert(i) => {
                    if i as usize >= self.spans.len() {
                        self.spans.resize(i as usize + 1, (0, 0));
                    }
                    if !dirty.contains(&i) {
                        dirty.push(i);
                    }
                }
                RowChange::Remove { at, moved } => {
                    dirty.retain(|&d| d != at);
                    if (at as usize) < self.spans.len() {
                        let (a, b) = self.spans.swap_remove(at as usize);
                        self.garbage += (b - a) as usize;
                    }
                    if let Some(m) = moved {
                        for d in dirty.iter_mut().filter(|d| **d == m) {
                            *d = at;
                        }
                    }
                }
            }
        }
        if self.buf.len() > 1 << 20 && self.garbage > self.buf.len() / 2 {
            self.rebuild(items, search);
            return;
        }
        for i in dirty {
            if let Some(item) = items.get(i as usize) {
                let (a, b) = self.spans[i as usize];
                self.garbage += (b - a) as usize;
                self.spans[i as usize] = self.push_text(item, search);
            }
        }
    }
}

/// One column: how to show a row's cell and how to order rows by it.
pub struct Col<T> {
    pub title: &'static str,
    pub width: u16,
    /// Narrow terminals drop the columns with the lowest `keep` first.
    pub keep: u8,
    pub right: bool,
    /// The column as text, when its order is exactly that text's order: a new sort then
    /// reads each row once and sorts (text, row) pairs instead of reaching into the rows at
    /// every comparison.
    pub text: Option<fn(&T) -> &str>,
    /// The column as a number, when its order is exactly that number's order (the same idea
    /// for numeric columns: sort (number, row) pairs).
    pub num: Option<fn(&T) -> u64>,
    pub cell: fn(&T, &DrawCtx<'_>) -> Span<'static>,
    pub cmp: fn(&T, &T) -> Ordering,
}

/// What a mouse event on the table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clicked {
    Nothing,
    /// A row was selected (by this click, or it already was: `again`).
    Row {
        again: bool,
    },
    /// Scrolled or re-sorted.
    Moved,
}

pub struct Table<T: 'static> {
    cols: &'static [Col<T>],
    id: fn(&T) -> &str,
    /// Writes a row's searchable text; the filter matches it ignoring ASCII case.
    search: fn(&T, &mut String),
    /// Each row's searchable text, lower case, by row index.
    texts: SearchTexts,
    pub filter: TextInput,
    /// Typing goes into the filter.
    pub editing: bool,
    pub sort: usize,
    pub desc: bool,
    /// Indices into the rows, filtered and sorted.
    view: Vec<u32>,
    /// Every row by name, and every row in the sort order (the view is these filtered).
    by_name: Vec<u32>,
    sorted: Vec<u32>,
    built: Option<Built>,
    /// Position in `view`.
    pub selected: usize,
    /// The selected row's name and index, to follow it across changes.
    selected_id: Option<(String, u32)>,
    offset: usize,
    /// Where the last frame drew the header and the rows, for the mouse.
    header: Rect,
    body: Rect,
    /// Columns drawn in the last frame: (x, width, column index).
    drawn: Vec<(u16, u16, usize)>,
}

impl<T: 'static> Table<T> {
    pub fn new(cols: &'static [Col<T>], id: fn(&T) -> &str, search: fn(&T, &mut String)) -> Self {
        Table {
            cols,
            id,
            search,
            texts: SearchTexts::default(),
            filter: TextInput::default(),
            editing: false,
            sort: 0,
            desc: false,
            view: Vec::new(),
            by_name: Vec::new(),
            sorted: Vec::new(),
            built: None,
            selected: 0,
            selected_id: None,
            offset: 0,
            header: Rect::default(),
            body: Rect::default(),
            drawn: Vec::new(),
        }
    }

    /// Brings the view up to date. Three orders are kept: every row by name, every row in the
    /// sort order, and the rows matching the filter in the sort order. A few changed rows are
    /// moved into place in each by binary search; a new sort is a stable sort of the by-name
    /// order by the column alone (cheap comparisons, ties already by name); a new filter is one
    /// pass over the sorted rows. Only a snapshot (or many changes at once) sorts by name again.
    pub fn refresh(&mut self, rows: &Rows<T>) {
        let items = &rows.items;
        let built = self.built.as_ref();
        let same_sort = built.is_some_and(|b| b.sort == self.sort && b.desc == self.desc);
        let same_filter = built.is_some_and(|b| b.filter == self.filter.value);
        let built_rev = built.map_or(0, |b| b.rev);
        if same_sort && same_filter && built_rev == rows.rev {
            return;
        }
        let needle = self.filter.value.trim().to_ascii_lowercase();
        let changes = match built {
            Some(_) => rows
                .changes_since(built_rev)
                .filter(|c| c.len() <= MAX_INCREMENTAL),
            None => None,
        };
        let name_cmp = self.name_order();
        let order = self.order();
        match changes {
            Some(changes) => {
                self.texts.apply(changes, items, self.search);
                let dirty = renumber(&mut self.by_name, changes);
                insert(&mut self.by_name, items, &dirty, &name_cmp, |_| true);
                if same_sort {
                    renumber(&mut self.sorted, changes);
                    insert(&mut self.sorted, items, &dirty, &order, |_| true);
                } else {
                    self.sort_from_names(items);
                }
                let texts = &self.texts;
                let keep = |i: u32| needle.is_empty() || texts.get(i).contains(needle.as_str());
                if same_sort && same_filter {
                    renumber(&mut self.view, changes);
                    insert(&mut self.view, items, &dirty, &order, keep);
                } else if same_sort
                    && changes.is_empty()
                    && self
                        .built
                        .as_ref()
                        .is_some_and(|b| narrows(&b.filter, &needle))
                {
                    // Typing on: what matches now matched before; no need to look further.
                    self.view.retain(|&i| keep(i));
                } else {
                    filter(&mut self.view, &self.sorted, keep);
                }
            }
            None => {
                self.texts.rebuild(items, self.search);
                let mut pairs: Vec<(&T, u32)> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| Some((t, u32::try_from(i).ok()?)))
                    .collect();
                pairs.sort_unstable_by(|a, b| name_cmp(a.0, b.0));
                self.by_name.clear();
                self.by_name.extend(pairs.into_iter().map(|(_, i)| i));
                self.sort_from_names(items);
                let texts = &self.texts;
                let keep = |i: u32| needle.is_empty() || texts.get(i).contains(needle.as_str());
                filter(&mut self.view, &self.sorted, keep);
            }
        }
        self.built = Some(Built {
            rev: rows.rev,
            filter: self.filter.value.clone(),
            sort: self.sort,
            desc: self.desc,
        });
        self.follow_selection(items);
    }

    fn name_order(&self) -> impl Fn(&T, &T) -> Ordering + use<T> {
        let id = self.id;
        move |a, b| id(a).cmp(id(b))
    }

    /// The order of the view: the sort column (reversed when descending), then the name.
    fn order(&self) -> impl Fn(&T, &T) -> Ordering + use<T> {
        let cmp = self.cols.get(self.sort).map(|c| c.cmp);
        let (id, desc) = (self.id, self.desc);
        move |a, b| {
            let o = cmp.map_or(Ordering::Equal, |cmp| cmp(a, b));
            let o = if desc { o.reverse() } else { o };
            o.then_with(|| id(a).cmp(id(b)))
        }
    }

    fn sort_from_names(&mut self, items: &[T]) {
        self.sorted.clear();
        self.sorted.extend_from_slice(&self.by_name);
        // Column 0 is the name: the by-name order is already sorted.
        if self.sort == 0 {
            if self.desc {
                self.sorted.reverse();
            }
            return;
        }
        let Some(col) = self.cols.get(self.sort) else {
            return;
        };
        let (cmp, desc) = (col.cmp, self.desc);
        if col.num.is_none() && col.text.is_none() {
            // Stable: rows that compare equal stay in name order.
            self.sorted.sort_by(|&a, &b| {
                let o = cmp(&items[a as usize], &items[b as usize]);
                if desc { o.reverse() } else { o }
            });
            return;
        }
        // Keys are read in the rows' own (memory) order, which is much faster than in name
        // order; each carries its row's place by name, which breaks ties.
        let mut rank = vec![0u32; items.len()];
        for (pos, &i) in self.by_name.iter().enumerate() {
            if let Some(r) = rank.get_mut(i as usize) {
                *r = u32::try_from(pos).unwrap_or(u32::MAX);
            }
        }
        let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(num) = col.num {
            let mut keys: Vec<(u64, u32, u32)> = items
                .iter()
                .enumerate()
                .map(|(i, t)| (num(t), rank[i], index(i)))
                .collect();
            keys.sort_unstable_by(|a, b| {
                let o = a.0.cmp(&b.0);
                let o = if desc { o.reverse() } else { o };
                o.then(a.1.cmp(&b.1))
            });
            self.sorted.clear();
            self.sorted.extend(keys.into_iter().map(|k| k.2));
            return;
        }
        let Some(text) = col.text else {
            return;
        };
        // Copied into one buffer, each with its first 16 bytes as a number: most comparisons are
        // one integer comparison, the rest read memory that is close together.
        let mut buf = String::new();
        let mut keys: Vec<(u128, u32, u32, u32, u32)> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let t = text(item);
            let mut head = [0u8; 16];
            let n = t.len().min(16);
            head[..n].copy_from_slice(&t.as_bytes()[..n]);
            let start = buf.len();
            buf.push_str(t);
            keys.push((
                u128::from_be_bytes(head),
                index(start),
                index(buf.len()),
                rank[i],
                index(i),
            ));
        }
        let rest = |k: &(u128, u32, u32, u32, u32)| {
            buf.get(k.1 as usize..k.2 as usize).unwrap_or_default()
        };
        let short = |k: &(u128, u32, u32, u32, u32)| k.2 - k.1 <= 16;
        keys.sort_unstable_by(|a, b| {
            // Equal heads of texts that fit in them are equal texts.
            let o = a.0.cmp(&b.0).then_with(|| {
                if short(a) && short(b) {
                    Ordering::Equal
                } else {
                    rest(a).cmp(rest(b))
                }
            });
            let o = if desc { o.reverse() } else { o };
            o.then(a.3.cmp(&b.3))
        });
        self.sorted.clear();
        self.sorted.extend(keys.into_iter().map(|k| k.4));
    }

    /// Keeps the selection on its row (by index when the row is still there, else by name).
    fn follow_selection(&mut self, items: &[T]) {
        if let Some((id, index)) = &self.selected_id {
            let same_row = items
                .get(*index as usize)
                .is_some_and(|t| (self.id)(t) == id);
            let pos = if same_row {
                self.view.iter().position(|v| v == index)
            } else {
                self.view
                    .iter()
                    .position(|&i| (self.id)(&items[i as usize]) == id)
            };
            if let Some(pos) = pos {
                self.selected = pos;
            }
        }
        self.clamp(items);
    }

    fn clamp(&mut self, items: &[T]) {
        self.selected = self.selected.min(self.view.len().saturating_sub(1));
        self.selected_id = self
            .view
            .get(self.selected)
            .and_then(|&i| Some(((self.id)(items.get(i as usize)?).to_owned(), i)));
    }

    /// The view: indices of the matching rows in order (tests compare patched and rebuilt).
    pub fn view(&self) -> &[u32] {
        &self.view
    }

    /// Rows matching the filter.
    pub fn len(&self) -> usize {
        self.view.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }

    pub fn selected_item<'a>(&self, items: &'a [T]) -> Option<&'a T> {
        self.view
            .get(self.selected)
            .and_then(|&i| items.get(i as usize))
    }

    pub fn page(&self) -> usize {
        usize::from(self.body.height).max(1)
    }

    fn move_to(&mut self, pos: usize, items: &[T]) {
        self.selected = pos;
        self.clamp(items);
    }

    /// Moving, filtering and sorting; `items`/`rev` as for [`Table::refresh`].
    pub fn on_action(&mut self, action: Action, rows: &Rows<T>) -> EventState {
        self.refresh(rows);
        let items = &rows.items;
        let page = self.page();
        let s = self.selected;
        match action {
            Action::Up => self.move_to(s.saturating_sub(1), items),
            Action::Down => self.move_to(s + 1, items),
            Action::PageUp => self.move_to(s.saturating_sub(page), items),
            Action::PageDown => self.move_to(s + page, items),
            Action::Top => self.move_to(0, items),
            Action::Bottom => self.move_to(usize::MAX, items),
            Action::Filter => self.editing = true,
            Action::SortNext => {
                self.sort = (self.sort + 1) % self.cols.len().max(1);
                self.desc = false;
            }
            Action::SortReverse => self.desc = !self.desc,
            Action::Back => {
                if !self.clear_filter(rows) {
                    return EventState::NotConsumed;
                }
            }
            _ => return EventState::NotConsumed,
        }
        self.refresh(rows);
        EventState::Consumed
    }

    /// Keys typed into the filter while editing; the filter stays while moving with ↑↓.
    pub fn on_key(&mut self, key: &KeyEvent, rows: &Rows<T>) -> EventState {
        if !self.editing
            || key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
        {
            return EventState::NotConsumed;
        }
        match key.code {
            KeyCode::Enter => self.editing = false,
            KeyCode::Esc => {
                self.editing = false;
                self.filter.value.clear();
            }
            KeyCode::Up => return self.on_action(Action::Up, rows),
            KeyCode::Down => return self.on_action(Action::Down, rows),
            KeyCode::PageUp => return self.on_action(Action::PageUp, rows),
            KeyCode::PageDown => return self.on_action(Action::PageDown, rows),
            _ => {
                self.filter.key(key);
            }
        }
        self.refresh(rows);
        EventState::Consumed
    }

    /// Esc outside editing: clears a filter if there is one.
    pub fn clear_filter(&mut self, rows: &Rows<T>) -> bool {
        if self.filter.value.is_empty() {
            return false;
        }
        self.filter.value.clear();
        self.refresh(rows);
        true
    }

    /// Wheel, row clicks and header clicks (sort by that column; again: reverse).
    pub fn on_mouse(&mut self, m: &MouseEvent, rows: &Rows<T>) -> Clicked {
        self.refresh(rows);
        let items = &rows.items;
        let inside = |r: Rect| {
            m.column >= r.x && m.column < r.x + r.width && m.row >= r.y && m.row < r.y + r.height
        };
        match m.kind {
            MouseEventKind::ScrollDown if inside(self.body) || inside(self.header) => {
                self.move_to(self.selected + 3, items);
                Clicked::Moved
            }
            MouseEventKind::ScrollUp if inside(self.body) || inside(self.header) => {
                self.move_to(self.selected.saturating_sub(3), items);
                Clicked::Moved
            }
            MouseEventKind::Down(button) if inside(self.body) => {
                let pos = self.offset + usize::from(m.row - self.body.y);
                if pos >= self.view.len() {
                    return Clicked::Nothing;
                }
                let again = pos == self.selected && button == MouseButton::Left;
                self.move_to(pos, items);
                Clicked::Row { again }
            }
            MouseEventKind::Down(MouseButton::Left) if inside(self.header) => {
                let Some(&(_, _, col)) = self
                    .drawn
                    .iter()
                    .find(|(x, w, _)| m.column >= *x && m.column < x + w)
                else {
                    return Clicked::Nothing;
                };
                if self.sort == col {
                    self.desc = !self.desc;
                } else {
                    (self.sort, self.desc) = (col, false);
                }
                self.refresh(rows);
                Clicked::Moved
            }
            _ => Clicked::Nothing,
        }
    }

    /// The sort column's title and direction, for titles: `name ▲`.
    pub fn sort_label(&self) -> String {
        let title = self.cols.get(self.sort).map_or("", |c| c.title);
        format!(
            "{} {}",
            title.to_lowercase(),
            if self.desc { "▼" } else { "▲" }
        )
    }

    /// Which columns fit in `width`, in their order.
    fn fitting(&self, width: u16) -> Vec<usize> {
        let mut by_keep: Vec<usize> = (0..self.cols.len()).collect();
        by_keep.sort_by_key(|&i| std::cmp::Reverse(self.cols[i].keep));
        let mut used = 0u16;
        let mut chosen = Vec::new();
        for i in by_keep {
            let w = self.cols[i].width + 1;
            if used + w <= width + 1 {
                used += w;
                chosen.push(i);
            }
        }
        chosen.sort_unstable();
        chosen
    }

    /// Draws the header and the visible rows only.
    pub fn draw(&mut self, f: &mut Frame<'_>, area: Rect, rows: &Rows<T>, ctx: &DrawCtx<'_>) {
        self.refresh(rows);
        let items = &rows.items;
        let theme: &Theme = ctx.theme;
        self.header = Rect {
            height: 1.min(area.height),
            ..area
        };
        self.body = Rect {
            y: area.y + 1,
            height: area.height.saturating_sub(1),
            ..area
        };
        let h = usize::from(self.body.height);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if h > 0 && self.selected >= self.offset + h {
            self.offset = self.selected + 1 - h;
        }
        self.offset = self.offset.min(self.view.len().saturating_sub(h));
        let cols = self.fitting(area.width);
        let mut x = area.x;
        self.drawn.clear();
        let widths: Vec<Constraint> = cols
            .iter()
            .map(|&i| {
                let w = self.cols[i].width;
                self.drawn.push((x, w, i));
                x = x.saturating_add(w + 1);
                Constraint::Length(w)
            })
            .collect();
        let header = Row::new(cols.iter().map(|&i| {
            let c = &self.cols[i];
            let mut title = c.title.to_owned();
            if i == self.sort {
                title.push(if self.desc { '▼' } else { '▲' });
            }
            aligned(Span::raw(title), c.right)
        }))
        .style(theme.header);
        let end = (self.offset + h).min(self.view.len());
        let rows = self.view[self.offset..end]
            .iter()
            .enumerate()
            .map(|(n, &i)| {
                let item = &items[i as usize];
                let row = Row::new(cols.iter().map(|&c| {
                    let col = &self.cols[c];
                    aligned((col.cell)(item, ctx), col.right)
                }));
                if self.offset + n == self.selected {
                    row.style(theme.selected)
                } else {
                    row.style(theme.base)
                }
            });
        let table = TableWidget::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .style(theme.base);
        f.render_widget(table, area);
    }
}

fn aligned(span: Span<'static>, right: bool) -> Cell<'static> {
    let line = Line::from(span);
    Cell::from(if right { line.right_aligned() } else { line })
}

/// A cell in a style, or plain.
pub fn styled(text: impl Into<String>, style: Option<Style>) -> Span<'static> {
    match style {
        Some(s) => Span::styled(text.into(), s),
        None => Span::raw(text.into()),
    }
}
