//! Text → AST: the layout pass, the pest grammar, and a total lowering from pest's tree to
//! [`ast`](crate::ast). Errors are E0101 (syntax) and E0102 (too large or too deep).

use pest::Parser as _;
use pest::iterators::Pair;

use crate::ast::*;
use crate::diagnostic::{Code, Diagnostic};
use crate::layout::layout;
use crate::limits::{MAX_NESTING, MAX_SOURCE_BYTES, PARSER_STACK_BYTES};
use crate::span::{FileId, Span};

mod grammar {
    #[derive(pest_derive::Parser)]
    #[grammar = "../../grammar/flux.pest"]
    pub struct FluxParser;
}
use grammar::FluxParser;
pub use grammar::Rule;

mod errors;

/// The result of parsing one file: the AST when the grammar accepted it (possibly with some
/// nodes replaced by [`ExprKind::Error`]), and every diagnostic found.
pub struct Parsed {
    pub file: Option<File>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses `text` (the contents of file `id`). Never panics; runs the recursive parser on a thread
/// with a large stack so that input nested up to the limits is safe.
pub fn parse_file(id: FileId, text: &str) -> Parsed {
    if text.len() > MAX_SOURCE_BYTES {
        let diag = Diagnostic::error(
            Code::E0102,
            Span::new(id, 0, 0),
            format!("source file is {} bytes; the limit is {} bytes (4 MiB)", text.len(), MAX_SOURCE_BYTES),
        )
        .with_primary_label("this file is too large");
        return Parsed { file: None, diagnostics: vec![diag] };
    }
    let owned = text.to_owned();
    let worker = std::thread::Builder::new()
        .name("fluxc-parser".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(move || parse_on_this_thread(id, &owned));
    match worker.map(|handle| handle.join()) {
        Ok(Ok(parsed)) => parsed,
        // The thread could not start or died: parse here; the nesting limits still hold.
        Ok(Err(payload)) => std::panic::resume_unwind(payload),
        Err(_) => parse_on_this_thread(id, text),
    }
}

/// [`parse_file`] without the big-stack thread; callers must provide a deep enough stack.
pub fn parse_on_this_thread(id: FileId, text: &str) -> Parsed {
    let laid = layout(text);
    if let Some(offset) = laid.too_deep {
        let diag = Diagnostic::error(
            Code::E0102,
            Span::new(id, offset, offset + 1),
            format!("brackets nested more than {MAX_NESTING} deep"),
        )
        .with_primary_label(format!("this bracket is nested more than {MAX_NESTING} deep"));
        return Parsed { file: None, diagnostics: vec![diag] };
    }
    match FluxParser::parse(Rule::file, &laid.text) {
        Ok(mut pairs) => {
            let mut lower =
                Lower { file: id, src: text, diagnostics: Vec::new(), depth: 0, keyword_names: false };
            let file = pairs.next().map(|pair| lower.file(pair));
            Parsed { file, diagnostics: lower.diagnostics }
        }
        Err(plain) => {
            // Parse again with pest's error detail (twice as slow) to say what was expected.
            let err = parse_with_error_detail(&laid.text).err().unwrap_or(plain);
            let diag = errors::syntax_error(id, text, &laid.text, &err);
            Parsed { file: None, diagnostics: vec![diag] }
        }
    }
}

/// pest's error detail is a process-wide switch read when a parse starts: hold a lock while it
/// is on so that concurrent parses of other files only ever see it on while some thread wants it.
fn parse_with_error_detail(text: &str) -> Result<(), pest::error::Error<Rule>> {
    static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = DETAIL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    pest::set_error_detail(true);
    let result = FluxParser::parse(Rule::file, text).map(|_| ());
    pest::set_error_detail(false);
    result
}

/// Lowering state: the file, its original text (for doc comments), diagnostics, and the current
/// expression nesting depth.
struct Lower<'s> {
    file: FileId,
    src: &'s str,
    diagnostics: Vec<Diagnostic>,
    depth: usize,
    /// Inside a train value, where `loss` may name a built-in metric.
    keyword_names: bool,
}

fn is_keyword_token(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_use
            | Rule::kw_fn
            | Rule::kw_layer
            | Rule::kw_loss
            | Rule::kw_optimizer
            | Rule::kw_model
            | Rule::kw_data
            | Rule::kw_train
            | Rule::kw_let
            | Rule::kw_param
            | Rule::kw_forward
            | Rule::kw_update
            | Rule::kw_if
            | Rule::kw_else
            | Rule::kw_state
            | Rule::kw_on
    )
}

/// The children of a pair, keyword tokens left out.
fn children(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_keyword_token(p.as_rule()))
}

impl<'s> Lower<'s> {
    /// The span of a pair, without the blanks and comment pest's implicit whitespace leaves on
    /// its end (`let x = 1  // why` spans `let x = 1`).
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), trim_end(self.src, s.start(), s.end()))
    }

    fn error(&mut self, span: Span, message: impl Into<String>, label: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(Code::E0101, span, message).with_primary_label(label));
    }

    /// Reports a tree shape the grammar rules out (a bug, not a user error) without panicking.
    fn unexpected(&mut self, span: Span, what: &str) {
        self.diagnostics.push(
            Diagnostic::error(Code::E0101, span, format!("internal error: unexpected parse tree ({what})"))
                .with_note("this is a bug in fluxc; please report it with this file"),
        );
    }

    fn ident(&self, pair: &Pair<'_, Rule>) -> Ident {
        Ident { name: pair.as_str().to_owned(), span: self.span(pair) }
    }

    /// The `///` lines directly above `span`, joined by newlines.
    fn doc(&self, span: Span) -> Option<String> {
        let before = self.src.get(..span.start as usize)?;
        let mut lines: Vec<&str> = Vec::new();
        // Skip the rest of the current line before the item (indentation).
        // Only an item that starts its line can have doc lines above it.
        let line_start = before.rfind('\n')?;
        if !before.get(line_start + 1..)?.trim().is_empty() {
            return None;
        }
        let mut rest = before.get(..line_start)?;
        loop {
            let (head, line) = match rest.rfind('\n') {
                Some(i) => (rest.get(..i), rest.get(i + 1..)?),
                None => (None, rest),
            };
            let trimmed = line.trim();
            let Some(text) = trimmed.strip_prefix("///") else { break };
            lines.push(text.strip_prefix(' ').unwrap_or(text).trim_end());
            match head {
                Some(h) => rest = h,
                None => break,
            }
        }
        if lines.is_empty() {
            return None;
        }
        lines.reverse();
        Some(lines.join("\n"))
    }

    // ------------------------------------------------------------------------------- items

    fn file(&mut self, pair: Pair<'_, Rule>) -> File {
        let span = self.span(&pair);
        let mut tops = Vec::new();
        for p in children(pair) {
            let top = match p.as_rule() {
                Rule::EOI => continue,
                Rule::use_decl => Top::Item(Item::Use(self.use_decl(p))),
                Rule::fn_def => Top::Item(Item::Fn(self.fn_def(p))),
                Rule::loss_def => Top::Item(Item::Loss(self.fn_def(p))),
                Rule::layer_def => Top::Item(Item::Layer(self.layer_def(p))),
                Rule::optimizer_def => Top::Item(Item::Optimizer(self.optimizer_def(p))),
                Rule::model_def => Top::Item(Item::Model(self.model_def(p))),
                Rule::data_def => Top::Item(Item::Data(self.data_def(p))),
                Rule::train_def => Top::Item(Item::Train(self.train_def(p))),
                _ => Top::Stmt(self.stmt(p)),
            };
            tops.push(top);
        }
        File { tops, span }
    }

    fn use_decl(&mut self, pair: Pair<'_, Rule>) -> UseDecl {
        let span = self.span(&pair);
        let mut target = UseTarget::Path { segments: Vec::new(), tail: UseTail::Single };
        for p in children(pair) {
            match p.as_rule() {
                Rule::string => {
                    let path = self.string_value(&p);
                    target = UseTarget::File { path, span: self.span(&p) };
                }
                Rule::use_path => {
                    let mut segments = Vec::new();
                    let mut tail = UseTail::Single;
                    for q in children(p) {
                        match q.as_rule() {
                            Rule::ident => segments.push(self.ident(&q)),
                            Rule::use_glob => tail = UseTail::Glob(self.span(&q)),
                            Rule::use_group => {
                                tail = UseTail::Group(children(q).map(|n| self.ident(&n)).collect())
                            }
                            _ => self.unexpected(span, "use path"),
                        }
                    }
                    target = UseTarget::Path { segments, tail };
                }
                _ => self.unexpected(span, "use"),
            }
        }
        UseDecl { target, span }
    }

    fn fn_def(&mut self, pair: Pair<'_, Rule>) -> FnDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut name = None;
        let mut dims = Vec::new();
        let mut params = Vec::new();
        let mut ret = None;
        let mut body = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(&p)),
                Rule::dim_params => dims = self.dim_params(p),
                Rule::params => params = self.params(p),
                Rule::block => body = Some(self.block(p)),
                _ => ret = Some(self.ty(p)),
            }
        }
        FnDef {
            doc,
            name: name.unwrap_or_else(|| self.missing_ident(span)),
            dims,
            params,
            ret,
            body: body.unwrap_or(Block { stmts: Vec::new(), span }),
            span,
        }
    }

    fn missing_ident(&mut self, span: Span) -> Ident {
        self.unexpected(span, "missing name");
        Ident { name: String::new(), span }
    }

    fn dim_params(&mut self, pair: Pair<'_, Rule>) -> Vec<DimParam> {
        let mut out = Vec::new();
        for p in children(pair) {
            let span = self.span(&p);
            let mut inner = children(p);
            let Some(first) = inner.next() else {
                self.unexpected(span, "dimension parameter");
                continue;
            };
            let kind = if first.as_rule() == Rule::shape_var {
                DimParamKind::Shape { name: self.shape_var_name(&first) }
            } else {
                let name = self.ident(&first);
                let default = inner.next().map(|e| self.expr(e));
                DimParamKind::Dim { name, default }
            };
            out.push(DimParam { kind, span });
        }
        out
    }

    fn shape_var_name(&self, pair: &Pair<'_, Rule>) -> Ident {
        let span = self.span(pair);
        let name = pair.as_str().trim_start_matches('.').trim().to_owned();
        Ident { span: Span { start: span.end - name.len() as u32, ..span }, name }
    }

    fn params(&mut self, pair: Pair<'_, Rule>) -> Vec<Param> {
        let mut out = Vec::new();
        for p in children(pair) {
            let span = self.span(&p);
            let mut inner = children(p);
            let (Some(name), Some(ty)) = (inner.next(), inner.next()) else {
                self.unexpected(span, "parameter");
                continue;
            };
            let name = self.ident(&name);
            let ty = self.ty(ty);
            let default = inner.next().map(|e| self.expr(e));
            out.push(Param { name, ty, default, span });
        }
        out
    }

    fn layer_def(&mut self, pair: Pair<'_, Rule>) -> LayerDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut name = None;
        let mut dims = Vec::new();
        let mut params = Vec::new();
        let mut members = Vec::new();
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(&p)),
                Rule::dim_params => dims = self.dim_params(p),
                Rule::params => params = self.params(p),
                Rule::param_member => members.push(LayerMember::Param(self.param_member(p))),
                Rule::state_member => members.push(LayerMember::State(self.state_member(p))),
                Rule::field_member => {
                    if let Some(field) = self.field_member(p) {
                        members.push(LayerMember::Field(field));
                    }
                }
                Rule::forward_def => members.push(LayerMember::Forward(self.forward_def(p))),
                _ => self.unexpected(span, "layer member"),
            }
        }
        LayerDef { doc, name: name.unwrap_or_else(|| self.missing_ident(span)), dims, params, members, span }
    }

    fn param_member(&mut self, pair: Pair<'_, Rule>) -> ParamMember {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut inner = children(pair);
        let name = inner.next().map(|p| self.ident(&p));
        let ty = inner.next().map(|p| self.ty(p));
        let init = inner.next().map(|p| self.expr(p));
        ParamMember {
            doc,
            name: name.unwrap_or_else(|| self.missing_ident(span)),
            ty: ty.unwrap_or(Type { kind: TypeKind::Tuple(Vec::new()), span }),
            init: init.unwrap_or(Expr { kind: ExprKind::Error, span }),
            span,
        }
    }

    fn state_member(&mut self, pair: Pair<'_, Rule>) -> StateMember {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut name = None;
        let mut ty = None;
        let mut init = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident if name.is_none() => name = Some(self.ident(&p)),
                Rule::expr => init = Some(self.expr(p)),
                _ => ty = Some(self.ty(p)),
            }
        }
        StateMember {
            doc,
            name: name.unwrap_or_else(|| self.missing_ident(span)),
            ty,
            init: init.unwrap_or(Expr { kind: ExprKind::Error, span }),
            span,
        }
    }

    fn field_member(&mut self, pair: Pair<'_, Rule>) -> Option<FieldMember> {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut inner = children(pair);
        let name = self.ident(&inner.next()?);
        let value = self.expr(inner.next()?);
        if name.name == "state" {
            // §12.18: `state` starts a state member; it cannot name a sub-layer.
            self.error(name.span, "`state` cannot name a sub-layer field", "expected a name after `state`");
        }
        Some(FieldMember { doc, name, value, span })
    }

    fn forward_def(&mut self, pair: Pair<'_, Rule>) -> ForwardDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut dims = Vec::new();
        let mut params = Vec::new();
        let mut ret = None;
        let mut body = None;
        for p in children(pair) {
            match p.as_rule() {
                Rule::dim_params => dims = self.dim_params(p),
                Rule::params => params = self.params(p),
                Rule::block => body = Some(self.block(p)),
                _ => ret = Some(self.ty(p)),
            }
        }
        ForwardDef { doc, dims, params, ret, body: body.unwrap_or(Block { stmts: Vec::new(), span }), span }
    }

    fn optimizer_def(&mut self, pair: Pair<'_, Rule>) -> OptimizerDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut name = None;
        let mut params = Vec::new();
        let mut members = Vec::new();
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(&p)),
                Rule::params => params = self.params(p),
                Rule::state_member => members.push(OptimizerMember::State(self.state_member(p))),
                Rule::update_def => {
                    let uspan = self.span(&p);
                    let mut uparams = Vec::new();
                    let mut body = None;
                    for q in children(p) {
                        match q.as_rule() {
                            Rule::ident => uparams.push(self.ident(&q)),
                            _ => body = Some(self.block(q)),
                        }
                    }
                    let body = body.unwrap_or(Block { stmts: Vec::new(), span: uspan });
                    members.push(OptimizerMember::Update(UpdateDef { params: uparams, body, span: uspan }));
                }
                _ => self.unexpected(span, "optimizer member"),
            }
        }
        OptimizerDef { doc, name: name.unwrap_or_else(|| self.missing_ident(span)), params, members, span }
    }

    fn model_def(&mut self, pair: Pair<'_, Rule>) -> ModelDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut inner = children(pair);
        let name = inner.next().map(|p| self.ident(&p));
        let input = inner.next().map(|p| self.ty(p));
        let output = inner.next().map(|p| self.ty(p));
        let value = inner.next().map(|p| self.expr(p));
        let unit = Type { kind: TypeKind::Tuple(Vec::new()), span };
        ModelDef {
            doc,
            name: name.unwrap_or_else(|| self.missing_ident(span)),
            input: input.unwrap_or_else(|| unit.clone()),
            output: output.unwrap_or(unit),
            value: value.unwrap_or(Expr { kind: ExprKind::Error, span }),
            span,
        }
    }

    fn data_def(&mut self, pair: Pair<'_, Rule>) -> DataDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut inner = children(pair);
        let name = inner.next().map(|p| self.ident(&p));
        let value = inner.next().map(|p| self.expr(p));
        DataDef {
            doc,
            name: name.unwrap_or_else(|| self.missing_ident(span)),
            value: value.unwrap_or(Expr { kind: ExprKind::Error, span }),
            span,
        }
    }

    fn train_def(&mut self, pair: Pair<'_, Rule>) -> TrainDef {
        let span = self.span(&pair);
        let doc = self.doc(span);
        let mut names = Vec::new();
        let mut entries = Vec::new();
        for p in children(pair) {
            match p.as_rule() {
                Rule::ident => names.push(self.ident(&p)),
                Rule::train_entry => {
                    let espan = self.span(&p);
                    let mut inner = children(p);
                    let (Some(key), Some(value)) = (inner.next(), inner.next()) else {
                        self.unexpected(espan, "train entry");
                        continue;
                    };
                    let key = self.ident(&key);
                    let value = self.with_keyword_names(|this| this.expr(value));
                    entries.push(TrainEntry { key, value, span: espan });
                }
                _ => self.unexpected(span, "train block"),
            }
        }
        let mut names = names.into_iter();
        let model = names.next().unwrap_or_else(|| self.missing_ident(span));
        let source = names.next().unwrap_or_else(|| self.missing_ident(span));
        TrainDef { doc, model, source, entries, span }
    }

    /// Lowers a train value, where keywords may serve as built-in names (§12.2).
    fn with_keyword_names<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let before = std::mem::replace(&mut self.keyword_names, true);
        let value = f(self);
        self.keyword_names = before;
        value
    }

    // ---------------------------------------------------------------------------- types

    fn ty(&mut self, pair: Pair<'_, Rule>) -> Type {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::tensor_type => {
                let mut inner = children(pair);
                let elem =
                    inner.next().and_then(|p| ElemType::from_keyword(p.as_str())).unwrap_or(ElemType::F32);
                let dims = inner
                    .map(|p| {
                        if p.as_rule() == Rule::shape_var {
                            Dim::Spread { name: self.shape_var_name(&p), span: self.span(&p) }
                        } else {
                            Dim::Expr(self.expr(p))
                        }
                    })
                    .collect();
                TypeKind::Tensor { elem, dims }
            }
            Rule::tuple_type => {
                let parts: Vec<_> = children(pair).collect();
                let trailing_comma = has_trailing_comma(self.src, parts.last());
                let mut items: Vec<Type> = parts.into_iter().map(|p| self.ty(p)).collect();
                if items.len() == 1
                    && !trailing_comma
                    && let Some(only) = items.pop()
                {
                    return Type { kind: only.kind, span };
                }
                TypeKind::Tuple(items)
            }
            Rule::fn_type => {
                let mut types: Vec<Type> = children(pair).map(|p| self.ty(p)).collect();
                let ret = types.pop().unwrap_or(Type { kind: TypeKind::Tuple(Vec::new()), span });
                TypeKind::Fn { params: types, ret: Box::new(ret) }
            }
            Rule::named_type => match children(pair).next() {
                Some(p) => TypeKind::Named(self.ident(&p)),
                None => TypeKind::Tuple(Vec::new()),
            },
            _ => {
                self.unexpected(span, "type");
                TypeKind::Tuple(Vec::new())
            }
        };
        Type { kind, span }
    }

    // ----------------------------------------------------------------------- statements

    fn block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let span = self.span(&pair);
        let stmts = children(pair).map(|p| self.stmt(p)).collect();
        Block { stmts, span }
    }

    fn stmt(&mut self, pair: Pair<'_, Rule>) -> Stmt {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::let_stmt => {
                let mut pattern = None;
                let mut ty = None;
                let mut value = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::tuple_pattern | Rule::name_pattern => pattern = Some(self.pattern(p)),
                        Rule::expr => value = Some(self.expr(p)),
                        _ => ty = Some(self.ty(p)),
                    }
                }
                StmtKind::Let {
                    pattern: pattern.unwrap_or(Pattern { kind: PatternKind::Wildcard, span }),
                    ty,
                    value: value.unwrap_or(Expr { kind: ExprKind::Error, span }),
                }
            }
            Rule::assign_stmt => {
                let mut inner = children(pair);
                let target = inner.next().map(|p| self.ident(&p));
                let value = inner.next().map(|p| self.expr(p));
                StmtKind::Assign {
                    target: target.unwrap_or_else(|| self.missing_ident(span)),
                    value: value.unwrap_or(Expr { kind: ExprKind::Error, span }),
                }
            }
            Rule::expr_stmt => match children(pair).next() {
                Some(e) => StmtKind::Expr(self.expr(e)),
                None => StmtKind::Expr(Expr { kind: ExprKind::Error, span }),
            },
            _ => {
                self.unexpected(span, "statement");
                StmtKind::Expr(Expr { kind: ExprKind::Error, span })
            }
        };
        Stmt { kind, span }
    }

    fn pattern(&mut self, pair: Pair<'_, Rule>) -> Pattern {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::tuple_pattern => {
                let parts: Vec<_> = children(pair).collect();
                let trailing_comma = has_trailing_comma(self.src, parts.last());
                let mut items: Vec<Pattern> = parts.into_iter().map(|p| self.pattern(p)).collect();
                if items.len() == 1
                    && !trailing_comma
                    && let Some(only) = items.pop()
                {
                    return Pattern { kind: only.kind, span };
                }
                PatternKind::Tuple(items)
            }
            _ => match children(pair).next() {
                Some(p) if p.as_str() == "_" => PatternKind::Wildcard,
                Some(p) => PatternKind::Name(self.ident(&p)),
                None => PatternKind::Wildcard,
            },
        };
        Pattern { kind, span }
    }

    // ---------------------------------------------------------------------- expressions

    /// Lowers any expression-level pair, one nesting level deeper than the caller.
    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        self.nested(1, pair, Self::expr_inner)
    }

    /// Runs `f` `levels` deeper; past `MAX_NESTING` reports E0102 once and yields an error node.
    fn nested(
        &mut self,
        levels: usize,
        pair: Pair<'_, Rule>,
        f: fn(&mut Self, Pair<'_, Rule>) -> Expr,
    ) -> Expr {
        if self.depth + levels > MAX_NESTING {
            let span = self.span(&pair);
            return self.too_deep(span);
        }
        self.depth += levels;
        let e = f(self, pair);
        self.depth -= levels;
        e
    }

    /// Reports E0102 (once per file) and yields an error node in place of a too-deep expression.
    fn too_deep(&mut self, span: Span) -> Expr {
        if !self.diagnostics.iter().any(|d| d.code == Code::E0102) {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::E0102,
                    span,
                    format!("expression nested more than {MAX_NESTING} deep"),
                )
                .with_primary_label(format!("this expression is nested more than {MAX_NESTING} deep"))
                .with_help("split it with `let` bindings"),
            );
        }
        Expr { kind: ExprKind::Error, span }
    }

    fn expr_inner(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => match children(pair).next() {
                Some(p) => self.expr_inner(p),
                None => Expr { kind: ExprKind::Error, span },
            },
            Rule::or_expr
            | Rule::and_expr
            | Rule::cmp_expr
            | Rule::add_expr
            | Rule::mul_expr
            | Rule::mat_expr => self.binary_chain(pair),
            Rule::unary | Rule::pow_operand => self.unary(pair),
            Rule::power => self.power(pair),
            Rule::postfix => self.postfix(pair),
            _ => self.primary(pair),
        }
    }

    /// A left-associative chain; a single operand stands for itself.
    fn binary_chain(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let mut inner = children(pair);
        let Some(first) = inner.next() else {
            return Expr { kind: ExprKind::Error, span };
        };
        let rest_pairs: Vec<_> = inner.collect();
        if rest_pairs.is_empty() {
            return self.expr_inner(first);
        }
        let lhs = self.expr(first);
        let mut rest = Vec::new();
        let mut it = rest_pairs.into_iter();
        while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
            let op_span = self.span(&op);
            let Some(bin) = BinOp::from_token(op.as_str().trim()) else {
                self.unexpected(op_span, "operator");
                continue;
            };
            let rhs = self.expr(rhs);
            rest.push(BinaryTail { op: bin, op_span, rhs });
        }
        Expr { kind: ExprKind::Binary { lhs: Box::new(lhs), rest }, span }
    }

    /// `-x`, `!x`, `- - x`: each prefix is one nesting level.
    fn unary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let mut ops = Vec::new();
        let mut operand = None;
        for p in children(pair) {
            if p.as_rule() == Rule::prefix_op {
                ops.push((prefix(&p), self.span(&p)));
            } else {
                operand = Some(p);
            }
        }
        let Some(operand) = operand else {
            let span = ops.first().map(|(_, s)| *s).unwrap_or_default();
            return Expr { kind: ExprKind::Error, span };
        };
        if ops.is_empty() {
            return self.expr_inner(operand);
        }
        let levels = ops.len();
        if self.depth + levels > MAX_NESTING {
            let span = self.span(&operand);
            return self.too_deep(span);
        }
        let inner = self.nested(levels, operand, Self::expr_inner);
        Self::wrap_prefixes(ops, inner)
    }

    fn wrap_prefixes(ops: Vec<(UnaryOp, Span)>, inner: Expr) -> Expr {
        ops.into_iter().rev().fold(inner, |acc, (op, op_span)| Expr {
            span: op_span.to(acc.span),
            kind: ExprKind::Unary { op, operand: Box::new(acc) },
        })
    }

    /// `x₀ ^ p₁x₁ ^ … ^ pₙxₙ` = `x₀ ^ p₁(x₁ ^ p₂(… ^ pₙxₙ))`, folded from the right.
    fn power(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let mut parts = children(pair);
        let Some(base) = parts.next() else {
            return Expr { kind: ExprKind::Error, span };
        };
        let rest: Vec<_> = parts.collect();
        let n = rest.len() / 2; // one `^` and one operand each
        if n == 0 {
            return self.expr_inner(base);
        }
        if self.depth + n > MAX_NESTING {
            return self.too_deep(span);
        }
        self.depth += n;
        let base = self.expr_inner(base);
        let mut tails: Vec<PowTail> = Vec::new();
        let mut it = rest.into_iter();
        while let (Some(op), Some(operand)) = (it.next(), it.next()) {
            let op_span = self.span(&op);
            let mut prefixes = Vec::new();
            let mut core = Expr { kind: ExprKind::Error, span: self.span(&operand) };
            for p in children(operand) {
                if p.as_rule() == Rule::prefix_op {
                    prefixes.push((prefix(&p), self.span(&p)));
                } else {
                    core = self.expr_inner(p);
                }
            }
            tails.push(PowTail { op_span, prefixes, core });
        }
        self.depth -= n;
        let pow = |lhs: Expr, op_span: Span, rhs: Expr| Expr {
            span: lhs.span.to(rhs.span),
            kind: ExprKind::Binary {
                lhs: Box::new(lhs),
                rest: vec![BinaryTail { op: BinOp::Pow, op_span, rhs }],
            },
        };
        // Fold from the right: each operand's prefixes wrap everything to its right.
        let mut acc: Option<(Span, Expr)> = None;
        for tail in tails.into_iter().rev() {
            let value = match acc.take() {
                None => tail.core,
                Some((op_span, rhs)) => pow(tail.core, op_span, rhs),
            };
            acc = Some((tail.op_span, Self::wrap_prefixes(tail.prefixes, value)));
        }
        match acc {
            Some((op_span, rhs)) => pow(base, op_span, rhs),
            None => base,
        }
    }

    /// A primary and its suffixes (calls, brackets, fields), each one nesting level.
    fn postfix(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let mut inner = children(pair);
        let Some(primary) = inner.next() else {
            return Expr { kind: ExprKind::Error, span };
        };
        let suffixes: Vec<_> = inner.collect();
        if suffixes.is_empty() {
            return self.primary(primary);
        }
        let levels = suffixes.len();
        if self.depth + levels > MAX_NESTING {
            return self.too_deep(span);
        }
        self.depth += levels;
        let mut acc = self.primary(primary);
        for suffix in suffixes {
            acc = self.suffix(acc, suffix);
            self.depth -= 1;
        }
        acc
    }

    fn suffix(&mut self, base: Expr, pair: Pair<'_, Rule>) -> Expr {
        let span = base.span.to(self.span(&pair));
        let kind = match pair.as_rule() {
            Rule::call_args => {
                let args = self.call_args(pair);
                ExprKind::Call { callee: Box::new(base), generics: None, args }
            }
            Rule::field => match children(pair).next() {
                Some(name) => ExprKind::Field { base: Box::new(base), name: self.ident(&name) },
                None => ExprKind::Error,
            },
            Rule::bracket_suffix => {
                let mut items = Vec::new();
                let mut args = None;
                for p in children(pair) {
                    if p.as_rule() == Rule::call_args {
                        args = Some(self.call_args(p));
                    } else {
                        items.push(p);
                    }
                }
                match args {
                    Some(args) => {
                        let generics = items.into_iter().map(|p| self.generic_arg(p)).collect();
                        ExprKind::Call { callee: Box::new(base), generics: Some(generics), args }
                    }
                    None => {
                        let indices = items.into_iter().map(|p| self.index_item(p)).collect();
                        ExprKind::Index { base: Box::new(base), indices }
                    }
                }
            }
            _ => {
                self.unexpected(span, "suffix");
                ExprKind::Error
            }
        };
        Expr { kind, span }
    }

    fn call_args(&mut self, pair: Pair<'_, Rule>) -> Vec<Arg> {
        let mut out = Vec::new();
        for arg in children(pair) {
            let span = self.span(&arg);
            let mut name = None;
            let mut values = Vec::new();
            for p in children(arg) {
                match p.as_rule() {
                    Rule::word => name = Some(self.ident(&p)),
                    _ => values.push(self.expr(p)),
                }
            }
            let mut values = values.into_iter();
            let kind = match (name, values.next(), values.next()) {
                (None, Some(v), None) => ArgKind::Positional(v),
                (Some(name), Some(value), None) => ArgKind::Named { name, value },
                (None, Some(from), Some(to)) => ArgKind::Pair { from, to },
                (Some(name), Some(from), Some(_)) => {
                    self.error(
                        from.span,
                        "a named argument cannot hold a `=>` pair",
                        format!("`{} = …` takes a single value", name.name),
                    );
                    ArgKind::Named { name, value: from }
                }
                _ => {
                    self.unexpected(span, "argument");
                    continue;
                }
            };
            out.push(Arg { kind, span });
        }
        out
    }

    fn generic_arg(&mut self, pair: Pair<'_, Rule>) -> GenericArg {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::tensor_type | Rule::fn_type => GenericArg::Type(self.ty(pair)),
            Rule::range_to => {
                let inner = children(pair).next();
                match inner.map(|e| self.expr(e)) {
                    Some(Expr { kind: ExprKind::Name(name), .. }) => GenericArg::Spread { name, span },
                    _ => {
                        self.error(
                            span,
                            "expected a shape variable after `..`",
                            "write `..S` with a shape name",
                        );
                        GenericArg::Expr(Expr { kind: ExprKind::Error, span })
                    }
                }
            }
            Rule::range_or_expr => {
                let mut inner = children(pair);
                let first = inner.next();
                if inner.next().is_some() {
                    self.error(span, "a range cannot be a dimension argument", "ranges only index tensors");
                }
                match first {
                    Some(e) => GenericArg::Expr(self.expr(e)),
                    None => GenericArg::Expr(Expr { kind: ExprKind::Error, span }),
                }
            }
            _ => {
                self.error(span, "`:` cannot be a dimension argument", "`:` only indexes tensors");
                GenericArg::Expr(Expr { kind: ExprKind::Error, span })
            }
        }
    }

    fn index_item(&mut self, pair: Pair<'_, Rule>) -> IndexItem {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::full_slice => IndexKind::Full,
            Rule::range_to => match children(pair).next() {
                Some(end) => IndexKind::Range { start: None, end: Some(self.expr(end)) },
                None => IndexKind::Rest,
            },
            Rule::range_or_expr => {
                let mut start = None;
                let mut dots = false;
                let mut end = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::range_dots => dots = true,
                        _ if dots => end = Some(self.expr(p)),
                        _ => start = Some(p),
                    }
                }
                match (start, dots) {
                    (Some(s), false) if s.as_str().trim() == "new" => IndexKind::New,
                    (Some(s), false) => IndexKind::At(self.expr(s)),
                    (s, _) => IndexKind::Range { start: s.map(|s| self.expr(s)), end },
                }
            }
            _ => {
                self.error(span, "a type cannot be an index", "expected an index, `:`, `..` or `new`");
                IndexKind::Full
            }
        };
        IndexItem { kind, span }
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::int => match pair.as_str().parse::<u64>() {
                Ok(n) => ExprKind::Int(n),
                Err(_) => {
                    self.error(span, "integer literal is too large", "this does not fit in 64 bits");
                    ExprKind::Error
                }
            },
            Rule::float => match pair.as_str().parse::<f64>() {
                Ok(x) if x.is_finite() => ExprKind::Float(x),
                _ => {
                    self.error(span, "float literal is out of range", "this is not a finite number");
                    ExprKind::Error
                }
            },
            Rule::string => ExprKind::Str(self.string_value(&pair)),
            Rule::bool_lit => ExprKind::Bool(pair.as_str() == "true"),
            Rule::training => ExprKind::Training,
            Rule::ident => {
                if pair.as_str() == "_" {
                    self.error(span, "`_` is not a value", "`_` can only be used as a pattern");
                    ExprKind::Error
                } else {
                    ExprKind::Name(self.ident(&pair))
                }
            }
            Rule::keyword_name => {
                if !self.keyword_names {
                    self.error(
                        span,
                        format!("keyword used as a name: `{}` cannot be used as a name here", pair.as_str()),
                        "a keyword (it may name a built-in only inside a `train` block's values)",
                    );
                }
                ExprKind::Name(self.ident(&pair))
            }
            Rule::paren => {
                let parts: Vec<_> = children(pair).collect();
                let trailing_comma = has_trailing_comma(self.src, parts.last());
                let mut items: Vec<Expr> = parts.into_iter().map(|p| self.expr(p)).collect();
                // Parentheses only group: keep the inner node, widened to include them.
                if items.len() == 1
                    && !trailing_comma
                    && let Some(only) = items.pop()
                {
                    return Expr { kind: only.kind, span };
                }
                ExprKind::Tuple(items)
            }
            Rule::list => ExprKind::List(children(pair).map(|p| self.expr(p)).collect()),
            Rule::if_expr => {
                let mut branches = Vec::new();
                let mut otherwise = None;
                let mut cond = None;
                for p in children(pair) {
                    match p.as_rule() {
                        Rule::block => match cond.take() {
                            Some(c) => {
                                let then = self.block(p);
                                branches.push(IfBranch { cond: c, then });
                            }
                            None => otherwise = Some(self.block(p)),
                        },
                        _ => cond = Some(self.expr(p)),
                    }
                }
                ExprKind::If { branches, otherwise }
            }
            _ => return self.expr_inner_nonprimary(pair),
        };
        Expr { kind, span }
    }

    /// A nested expression rule reached where a primary was expected (parenthesised chains).
    fn expr_inner_nonprimary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        match pair.as_rule() {
            Rule::expr
            | Rule::or_expr
            | Rule::and_expr
            | Rule::cmp_expr
            | Rule::add_expr
            | Rule::mul_expr
            | Rule::mat_expr
            | Rule::unary
            | Rule::power
            | Rule::postfix
            | Rule::pow_operand => self.expr_inner(pair),
            _ => {
                let span = self.span(&pair);
                self.unexpected(span, "expression");
                Expr { kind: ExprKind::Error, span }
            }
        }
    }

    /// The value of a string literal, escapes resolved (the grammar admits only valid ones).
    fn string_value(&self, pair: &Pair<'_, Rule>) -> String {
        let raw = pair.as_str();
        let body = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(raw);
        let mut out = String::with_capacity(body.len());
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other) => out.push(other),
                    None => {}
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// One operand of a `^` chain after its `^`: the operator's span, the operand's prefixes, the operand.
struct PowTail {
    op_span: Span,
    prefixes: Vec<(UnaryOp, Span)>,
    core: Expr,
}

fn prefix(pair: &Pair<'_, Rule>) -> UnaryOp {
    if pair.as_str() == "!" { UnaryOp::Not } else { UnaryOp::Neg }
}

/// `end` moved back over trailing blanks and a trailing `//` comment (never before `start`).
fn trim_end(src: &str, start: usize, mut end: usize) -> usize {
    let bytes = src.as_bytes();
    loop {
        while end > start && bytes.get(end - 1).is_some_and(|b| b.is_ascii_whitespace()) {
            end -= 1;
        }
        // Only a span that runs to the end of its line can end inside a comment.
        if !matches!(bytes.get(end), None | Some(b'\n' | b'\r')) {
            return end;
        }
        let line_start = src.get(..end).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1).max(start);
        match comment_start(src.get(line_start..end).unwrap_or("")) {
            Some(at) if line_start + at > start => end = line_start + at,
            _ => return end,
        }
    }
}

/// Where a `//` comment starts in one line of code, skipping string literals.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        match (bytes.get(i), in_string) {
            (Some(b'"'), _) => in_string = !in_string,
            (Some(b'\\'), true) => i += 1,
            (Some(b'/'), false) if bytes.get(i + 1) == Some(&b'/') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether a `,` follows `last` (skipping blanks and comments): tells `(x)` from the one-tuple `(x,)`.
fn has_trailing_comma(src: &str, last: Option<&Pair<'_, Rule>>) -> bool {
    let Some(last) = last else { return false };
    let mut rest = src.get(last.as_span().end()..).unwrap_or("");
    loop {
        rest = rest.trim_start();
        if let Some(comment) = rest.strip_prefix("//") {
            rest = comment.find('\n').and_then(|i| comment.get(i..)).unwrap_or("");
        } else {
            return rest.starts_with(',');
        }
    }
}
