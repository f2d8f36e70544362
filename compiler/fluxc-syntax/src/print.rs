//! The stable AST printer behind `fluxc build FILE --emit ast` and the parse snapshots.
//!
//! Items, members and statements print one per line with their source position (`@line:col`);
//! expressions print as fully bracketed s-expressions, so precedence and associativity show.

use std::fmt::Write as _;

use crate::ast::*;
use crate::source::SourceFile;
use crate::span::Span;

pub fn print_file(file: &File, source: &SourceFile) -> String {
    let mut p = Printer { out: String::new(), source };
    p.file(file);
    p.out
}

/// One expression as an s-expression (also used by later stages' printers).
pub fn expr_to_string(e: &Expr) -> String {
    let mut out = String::new();
    write_expr(&mut out, e);
    out
}

/// One type in source syntax.
pub fn type_to_string(t: &Type) -> String {
    let mut out = String::new();
    write_type(&mut out, t);
    out
}

struct Printer<'a> {
    out: String,
    source: &'a SourceFile,
}

impl Printer<'_> {
    fn line(&mut self, indent: usize, text: &str, span: Span) {
        let at = self.source.line_col(span.start as usize);
        let end = self.source.line_col(span.end as usize);
        let _ = writeln!(
            self.out,
            "{:indent$}{text}  @{}:{}-{}:{}",
            "",
            at.line,
            at.column,
            end.line,
            end.column,
            indent = indent * 2
        );
    }

    fn doc(&mut self, indent: usize, doc: &Option<String>) {
        if let Some(doc) = doc {
            let _ = writeln!(self.out, "{:indent$}doc {doc:?}", "", indent = indent * 2);
        }
    }

    fn file(&mut self, file: &File) {
        self.line(0, "file", file.span);
        for top in &file.tops {
            match top {
                Top::Item(item) => self.item(1, item),
                Top::Stmt(stmt) => self.stmt(1, stmt),
            }
        }
    }

    fn item(&mut self, i: usize, item: &Item) {
        match item {
            Item::Use(u) => {
                let text = match &u.target {
                    UseTarget::File { path, .. } => format!("use {path:?}"),
                    UseTarget::Path { segments, tail } => {
                        let path: Vec<&str> = segments.iter().map(|s| s.name.as_str()).collect();
                        let tail = match tail {
                            UseTail::Single => String::new(),
                            UseTail::Glob(_) => "::*".into(),
                            UseTail::Group(names) => {
                                let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
                                format!("::{{{}}}", names.join(", "))
                            }
                        };
                        format!("use {}{tail}", path.join("::"))
                    }
                };
                self.line(i, &text, u.span);
            }
            Item::Fn(f) => self.fn_def(i, "fn", f),
            Item::Loss(f) => self.fn_def(i, "loss", f),
            Item::Layer(l) => {
                let head = format!("layer {}{}{}", l.name.name, dims_text(&l.dims), params_text(&l.params));
                self.line(i, &head, l.span);
                self.doc(i + 1, &l.doc);
                for m in &l.members {
                    match m {
                        LayerMember::Param(p) => {
                            let text = format!(
                                "param {}: {} = {}",
                                p.name.name,
                                type_to_string(&p.ty),
                                expr_to_string(&p.init)
                            );
                            self.line(i + 1, &text, p.span);
                            self.doc(i + 2, &p.doc);
                        }
                        LayerMember::State(s) => self.state(i + 1, s),
                        LayerMember::Field(f) => {
                            let text = format!("field {} = {}", f.name.name, expr_to_string(&f.value));
                            self.line(i + 1, &text, f.span);
                            self.doc(i + 2, &f.doc);
                        }
                        LayerMember::Forward(f) => {
                            let head = format!(
                                "forward{}{}{}",
                                dims_text(&f.dims),
                                params_text(&f.params),
                                ret_text(&f.ret)
                            );
                            self.line(i + 1, &head, f.span);
                            self.doc(i + 2, &f.doc);
                            self.block(i + 2, &f.body);
                        }
                    }
                }
            }
            Item::Optimizer(o) => {
                let head = format!("optimizer {}{}", o.name.name, params_text(&o.params));
                self.line(i, &head, o.span);
                self.doc(i + 1, &o.doc);
                for m in &o.members {
                    match m {
                        OptimizerMember::State(s) => self.state(i + 1, s),
                        OptimizerMember::Update(u) => {
                            let names: Vec<&str> = u.params.iter().map(|p| p.name.as_str()).collect();
                            self.line(i + 1, &format!("update({})", names.join(", ")), u.span);
                            self.block(i + 2, &u.body);
                        }
                    }
                }
            }
            Item::Model(m) => {
                let text = format!(
                    "model {}: {} -> {} = {}",
                    m.name.name,
                    type_to_string(&m.input),
                    type_to_string(&m.output),
                    expr_to_string(&m.value)
                );
                self.line(i, &text, m.span);
                self.doc(i + 1, &m.doc);
            }
            Item::Data(d) => {
                self.line(i, &format!("data {} = {}", d.name.name, expr_to_string(&d.value)), d.span);
                self.doc(i + 1, &d.doc);
            }
            Item::Train(t) => {
                self.line(i, &format!("train {} on {}", t.model.name, t.source.name), t.span);
                self.doc(i + 1, &t.doc);
                for e in &t.entries {
                    self.line(i + 1, &format!("{} = {}", e.key.name, expr_to_string(&e.value)), e.span);
                }
            }
        }
    }

    fn fn_def(&mut self, i: usize, keyword: &str, f: &FnDef) {
        let head = format!(
            "{keyword} {}{}{}{}",
            f.name.name,
            dims_text(&f.dims),
            params_text(&f.params),
            ret_text(&f.ret)
        );
        self.line(i, &head, f.span);
        self.doc(i + 1, &f.doc);
        self.block(i + 1, &f.body);
    }

    fn state(&mut self, i: usize, s: &StateMember) {
        let ty = s.ty.as_ref().map(|t| format!(": {}", type_to_string(t))).unwrap_or_default();
        self.line(i, &format!("state {}{ty} = {}", s.name.name, expr_to_string(&s.init)), s.span);
        self.doc(i + 1, &s.doc);
    }

    fn block(&mut self, i: usize, b: &Block) {
        for s in &b.stmts {
            self.stmt(i, s);
        }
    }

    fn stmt(&mut self, i: usize, s: &Stmt) {
        let text = match &s.kind {
            StmtKind::Let { pattern, ty, value } => {
                let ty = ty.as_ref().map(|t| format!(": {}", type_to_string(t))).unwrap_or_default();
                format!("let {}{ty} = {}", pattern_to_string(pattern), expr_to_string(value))
            }
            StmtKind::Assign { target, value } => format!("{} := {}", target.name, expr_to_string(value)),
            StmtKind::Expr(e) => expr_to_string(e),
        };
        self.line(i, &text, s.span);
    }
}

fn dims_text(dims: &[DimParam]) -> String {
    if dims.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match &d.kind {
            DimParamKind::Dim { name, default: None } => name.name.clone(),
            DimParamKind::Dim { name, default: Some(e) } => format!("{} = {}", name.name, expr_to_string(e)),
            DimParamKind::Shape { name } => format!("..{}", name.name),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

fn params_text(params: &[Param]) -> String {
    let parts: Vec<String> = params
        .iter()
        .map(|p| {
            let default = p.default.as_ref().map(|e| format!(" = {}", expr_to_string(e))).unwrap_or_default();
            format!("{}: {}{default}", p.name.name, type_to_string(&p.ty))
        })
        .collect();
    format!("({})", parts.join(", "))
}

fn ret_text(ret: &Option<Type>) -> String {
    ret.as_ref().map(|t| format!(" -> {}", type_to_string(t))).unwrap_or_default()
}

fn pattern_to_string(p: &Pattern) -> String {
    match &p.kind {
        PatternKind::Name(n) => n.name.clone(),
        PatternKind::Wildcard => "_".into(),
        PatternKind::Tuple(items) => {
            let parts: Vec<String> = items.iter().map(pattern_to_string).collect();
            if parts.len() == 1 {
                format!("({},)", parts.join(""))
            } else {
                format!("({})", parts.join(", "))
            }
        }
    }
}

fn write_type(out: &mut String, t: &Type) {
    match &t.kind {
        TypeKind::Tensor { elem, dims } => {
            out.push_str(elem.as_str());
            if !dims.is_empty() {
                out.push('[');
                for (k, d) in dims.iter().enumerate() {
                    if k > 0 {
                        out.push_str(", ");
                    }
                    match d {
                        Dim::Expr(e) => write_expr(out, e),
                        Dim::Spread { name, .. } => {
                            let _ = write!(out, "..{}", name.name);
                        }
                    }
                }
                out.push(']');
            }
        }
        TypeKind::Tuple(items) => {
            out.push('(');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_type(out, item);
            }
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        TypeKind::Fn { params, ret } => {
            out.push_str("fn(");
            for (k, p) in params.iter().enumerate() {
                if k > 0 {
                    out.push_str(", ");
                }
                write_type(out, p);
            }
            out.push_str(") -> ");
            write_type(out, ret);
        }
        TypeKind::Named(n) => out.push_str(&n.name),
    }
}

fn write_list(out: &mut String, items: &[Expr]) {
    for e in items {
        out.push(' ');
        write_expr(out, e);
    }
}

fn write_block(out: &mut String, b: &Block) {
    out.push('{');
    for (k, s) in b.stmts.iter().enumerate() {
        out.push_str(if k == 0 { " " } else { "; " });
        match &s.kind {
            StmtKind::Let { pattern, ty, value } => {
                let _ = write!(out, "let {}", pattern_to_string(pattern));
                if let Some(t) = ty {
                    out.push_str(": ");
                    write_type(out, t);
                }
                out.push_str(" = ");
                write_expr(out, value);
            }
            StmtKind::Assign { target, value } => {
                let _ = write!(out, "{} := ", target.name);
                write_expr(out, value);
            }
            StmtKind::Expr(e) => write_expr(out, e),
        }
    }
    out.push_str(" }");
}

fn write_expr(out: &mut String, e: &Expr) {
    match &e.kind {
        ExprKind::Int(n) => {
            let _ = write!(out, "{n}");
        }
        ExprKind::Float(x) => {
            let _ = write!(out, "{x:?}");
        }
        ExprKind::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        ExprKind::Str(s) => {
            let _ = write!(out, "{s:?}");
        }
        ExprKind::Training => out.push_str("training"),
        ExprKind::Name(n) => out.push_str(&n.name),
        ExprKind::Tuple(items) => {
            out.push_str("(tuple");
            write_list(out, items);
            out.push(')');
        }
        ExprKind::List(items) => {
            out.push_str("(list");
            write_list(out, items);
            out.push(')');
        }
        ExprKind::Unary { op, operand } => {
            let _ = write!(out, "({}", op.as_str());
            out.push(' ');
            write_expr(out, operand);
            out.push(')');
        }
        ExprKind::Binary { lhs, rest } => {
            // Left fold, printed without recursion on the chain: all the opening brackets first.
            for tail in rest.iter().rev() {
                let _ = write!(out, "({} ", tail.op.as_str());
            }
            write_expr(out, lhs);
            for tail in rest {
                out.push(' ');
                write_expr(out, &tail.rhs);
                out.push(')');
            }
        }
        ExprKind::Call { callee, generics, args } => {
            out.push_str("(call ");
            write_expr(out, callee);
            if let Some(generics) = generics {
                out.push_str(" [");
                for (k, g) in generics.iter().enumerate() {
                    if k > 0 {
                        out.push(' ');
                    }
                    match g {
                        GenericArg::Expr(e) => write_expr(out, e),
                        GenericArg::Type(t) => write_type(out, t),
                        GenericArg::Spread { name, .. } => {
                            let _ = write!(out, "..{}", name.name);
                        }
                    }
                }
                out.push(']');
            }
            for a in args {
                out.push(' ');
                match &a.kind {
                    ArgKind::Positional(v) => write_expr(out, v),
                    ArgKind::Named { name, value } => {
                        let _ = write!(out, "({} = ", name.name);
                        write_expr(out, value);
                        out.push(')');
                    }
                    ArgKind::Pair { from, to } => {
                        out.push_str("(=> ");
                        write_expr(out, from);
                        out.push(' ');
                        write_expr(out, to);
                        out.push(')');
                    }
                }
            }
            out.push(')');
        }
        ExprKind::Index { base, indices } => {
            out.push_str("(index ");
            write_expr(out, base);
            for ix in indices {
                out.push(' ');
                match &ix.kind {
                    IndexKind::At(v) => write_expr(out, v),
                    IndexKind::Full => out.push(':'),
                    IndexKind::New => out.push_str("new"),
                    IndexKind::Rest => out.push_str(".."),
                    IndexKind::Range { start, end } => {
                        out.push_str("(range ");
                        match start {
                            Some(s) => write_expr(out, s),
                            None => out.push('_'),
                        }
                        out.push(' ');
                        match end {
                            Some(s) => write_expr(out, s),
                            None => out.push('_'),
                        }
                        out.push(')');
                    }
                }
            }
            out.push(')');
        }
        ExprKind::Field { base, name } => {
            out.push_str("(. ");
            write_expr(out, base);
            let _ = write!(out, " {})", name.name);
        }
        ExprKind::If { branches, otherwise } => {
            out.push_str("(if");
            for b in branches {
                out.push(' ');
                write_expr(out, &b.cond);
                out.push(' ');
                write_block(out, &b.then);
            }
            if let Some(o) = otherwise {
                out.push_str(" else ");
                write_block(out, o);
            }
            out.push(')');
        }
        ExprKind::Error => out.push_str("<error>"),
    }
}
