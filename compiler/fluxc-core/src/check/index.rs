//! The program's items and how names resolve to them (§3, §7, §10.1): each file sees its own
//! items and those of the files it `use`s, then all of std (the prelude), then the primitives.
//! The checker and the lowering share this one index, so they resolve names alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fluxc_syntax::ast::{self, Item};
use fluxc_syntax::{Code, Diagnostic, FileId, Span};

use super::Unit;
use super::prims::{self, Prim};

pub struct ItemInfo<'a> {
    pub name: String,
    pub name_span: Span,
    pub item: &'a Item,
    pub file: FileId,
}

/// What a name refers to outside the local scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    Item(usize),
    Prim(Prim),
}

pub struct Index<'a> {
    pub items: Vec<ItemInfo<'a>>,
    /// Per file: its own items and those of the files it `use`s.
    pub(crate) scopes: HashMap<FileId, HashMap<String, usize>>,
    /// All of std (the prelude, §7).
    pub(crate) prelude: HashMap<String, usize>,
    /// std module → the names it exports (written in stdlib/ or built in).
    pub(crate) modules: BTreeMap<&'static str, BTreeSet<String>>,
}

impl<'a> Index<'a> {
    /// Collects the items of every unit; E0203 for a second definition in one file.
    pub fn build(units: &[Unit<'a>]) -> (Index<'a>, Vec<Diagnostic>) {
        let mut idx = Index {
            items: Vec::new(),
            scopes: HashMap::new(),
            prelude: HashMap::new(),
            modules: BTreeMap::new(),
        };
        let mut diags = Vec::new();
        for m in prims::STD_MODULES {
            idx.modules.insert(m, Prim::exported_by(m).map(|p| p.name().to_owned()).collect());
        }
        let mut own: HashMap<FileId, HashMap<String, usize>> = HashMap::new();
        for unit in units {
            let table = own.entry(unit.file).or_default();
            for top in &unit.ast.tops {
                let ast::Top::Item(item) = top else { continue };
                let Some(name) = item_name(item) else { continue };
                let info = ItemInfo { name: name.name.clone(), name_span: name.span, item, file: unit.file };
                if matches!(item, Item::Train(_)) {
                    // Train blocks are named by their model and may repeat (§10.11).
                    idx.items.push(info);
                    continue;
                }
                if let Some(&first) = table.get(&name.name) {
                    let mut d = Diagnostic::error(
                        Code::E0203,
                        name.span,
                        format!("`{}` is defined twice", name.name),
                    )
                    .with_primary_label("second definition");
                    if let Some(first) = idx.items.get(first) {
                        d = d.with_label(first.name_span, "first defined here");
                    }
                    diags.push(d.with_help("rename one of them"));
                    continue;
                }
                idx.items.push(info);
                let id = idx.items.len() - 1;
                table.insert(name.name.clone(), id);
                if let Some(m) = unit.std_module {
                    idx.prelude.insert(name.name.clone(), id);
                    if let Some(set) = idx.modules.get_mut(m) {
                        set.insert(name.name.clone());
                    }
                }
            }
        }
        for unit in units {
            let mut scope = own.get(&unit.file).cloned().unwrap_or_default();
            for used in &unit.uses {
                if let Some(t) = own.get(used) {
                    for (k, v) in t {
                        scope.entry(k.clone()).or_insert(*v);
                    }
                }
            }
            idx.scopes.insert(unit.file, scope);
        }
        (idx, diags)
    }

    /// Looks a name up outside the local scope: the file's items (and its `use`d files), then
    /// the primitives, then std. (A std item written in stdlib/ never shares a primitive's name.)
    pub fn global(&self, file: FileId, name: &str) -> Option<Global> {
        if let Some(id) = self.scopes.get(&file).and_then(|s| s.get(name)) {
            return Some(Global::Item(*id));
        }
        if let Some(p) = Prim::from_name(name) {
            return Some(Global::Prim(p));
        }
        self.prelude.get(name).map(|id| Global::Item(*id))
    }

    /// The item named `name` as the file `file` sees it, if it is an item.
    pub fn item(&self, file: FileId, name: &str) -> Option<usize> {
        match self.global(file, name) {
            Some(Global::Item(i)) => Some(i),
            _ => None,
        }
    }
}

fn item_name(item: &Item) -> Option<&ast::Ident> {
    Some(match item {
        Item::Use(_) => return None,
        Item::Fn(f) | Item::Loss(f) => &f.name,
        Item::Layer(l) => &l.name,
        Item::Optimizer(o) => &o.name,
        Item::Model(m) => &m.name,
        Item::Data(d) => &d.name,
        Item::Train(t) => &t.model,
    })
}
