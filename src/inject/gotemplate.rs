//! A Go `text/template` interpreter for user-defined injection templates (Istio's
//! `sidecarInjectorWebhook.templates`, mizzen's `spec.injection.templates`), over JSON data.
//!
//! Supported: text with `{{ }}` actions and `{{-`/`-}}` trimming, comments, pipelines with `|`, parenthesised
//! sub-pipelines, variables (`$x := …`, `$x = …`, `$`), field chains on `.` and variables, `if`/`else if`/`else`,
//! `range` (with `$i, $v :=` and `else`), `with`/`else`, `define`/`template`, and the functions Istio's templates
//! use (Go's builtins, Istio's own such as `annotation`, `isset`, `valueOrDefault`, `toJSON`, and the Sprig ones
//! such as `default`, `quote`, `toYaml`, `indent`, `contains`, `join`, `list`, `append`). Anything else is an error
//! naming the template and the function. Data is JSON: a field `.Name` is found as the key `Name`, else `name`,
//! else case-insensitively (`APIVersion` finds `apiVersion`), so Kubernetes objects read as Go structs do; a
//! missing field is empty (where Go would print `<no value>` for a missing map key).
// The lexer and parser index the template text by position after bounds checks; converting them to `.get()` is
// tracked work. Templates come from the MeshInstall (cluster administrators), not from pods.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value, json};

/// Output larger than this is refused (a runaway template must not exhaust the webhook's memory).
const MAX_OUTPUT: usize = 4 << 20;
/// Nested `template` calls deeper than this are refused (recursion).
const MAX_DEPTH: usize = 64;
/// Executing more nodes than this is refused (a template that branches into too much work).
const MAX_STEPS: usize = 1_000_000;

/// A template that cannot be parsed or executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name:?}: {message}")]
pub struct TemplateError {
    /// The template's name.
    pub name: String,
    /// What went wrong.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
struct Pipeline {
    decl: Vec<String>,
    assign: bool,
    commands: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
    Template(String, Option<Pipeline>),
}

/// A parsed template and the templates it defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    name: String,
    root: Vec<Node>,
    defines: BTreeMap<String, Vec<Node>>,
}

// ---------------------------------------------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Action(String),
}

fn split(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let err = |m: String| TemplateError {
        name: name.to_owned(),
        message: m,
    };
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            out.push(Piece::Text(text.to_owned()));
        }
        let body_start = if trim_left { 1 } else { 0 };
        let body_src = &after[body_start..];
        // A comment may contain "}}"; it ends at "*/" followed by the delimiter.
        let trimmed = body_src.trim_start();
        let end = if trimmed.starts_with("/*") {
            let c = body_src.find("*/").ok_or_else(|| err("unclosed comment".into()))?;
            c + body_src[c..].find("}}").ok_or_else(|| err("unclosed action".into()))?
        } else {
            find_close(body_src).ok_or_else(|| err("unclosed action: missing }}".into()))?
        };
        let mut body = &body_src[..end];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        let body = body.trim();
        if !(body.starts_with("/*") && body.ends_with("*/")) {
            out.push(Piece::Action(body.to_owned()));
        }
        rest = &body_src[end + 2..];
    }
    let mut text = rest;
    if trim_next {
        text = text.trim_start();
    }
    if !text.is_empty() {
        out.push(Piece::Text(text.to_owned()));
    }
    Ok(out)
}

/// Position of the `}}` closing an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Num(Number),
    Open,
    Close,
    Pipe,
    Declare,
    Assign,
    Comma,
    Dot,
}

fn tokens(name: &str, s: &str) -> Result<Vec<Tok>, TemplateError> {
    let err = |m: String| TemplateError {
        name: name.to_owned(),
        message: m,
    };
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let fields = |i: &mut usize| {
        let mut path = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            path.push(chars[start..*i].iter().collect::<String>());
        }
        path
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
                if i < chars.len() && chars[i] == '.' {
                    let path = fields(&mut i);
                    out.push(Tok::Field(path));
                }
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '.' => {
                if chars.get(i + 1).is_some_and(|n| n.is_alphabetic() || *n == '_') {
                    out.push(Tok::Field(fields(&mut i)));
                } else {
                    out.push(Tok::Dot);
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                let name = ident(&mut i);
                let path = fields(&mut i);
                out.push(Tok::Var(format!("${name}"), path));
            }
            '"' => {
                i += 1;
                let mut text = String::new();
                loop {
                    let ch = *chars.get(i).ok_or_else(|| err("unterminated string".into()))?;
                    i += 1;
                    match ch {
                        '"' => break,
                        '\\' => {
                            let e = *chars.get(i).ok_or_else(|| err("unterminated string".into()))?;
                            i += 1;
                            text.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        other => text.push(other),
                    }
                }
                out.push(Tok::Str(text));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(err("unterminated raw string".into()));
                }
                out.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text
                    .parse::<i64>()
                    .map(Number::from)
                    .ok()
                    .or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64))
                    .ok_or_else(|| err(format!("bad number {text:?}")))?;
                out.push(Tok::Num(n));
            }
            c if c.is_alphabetic() || c == '_' => out.push(Tok::Word(ident(&mut i))),
            other => return Err(err(format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------- parsing

struct Parser<'a> {
    name: &'a str,
    pieces: Vec<Piece>,
    pos: usize,
    defines: BTreeMap<String, Vec<Node>>,
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End,
    Else(Vec<Tok>),
}

impl Parser<'_> {
    fn err(&self, m: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_owned(),
            message: m.into(),
        }
    }

    fn list(&mut self) -> Result<(Vec<Node>, Stop), TemplateError> {
        let mut nodes = Vec::new();
        while self.pos < self.pieces.len() {
            let piece = self.pieces[self.pos].clone();
            self.pos += 1;
            let action = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action(a) => a,
            };
            let toks = tokens(self.name, &action)?;
            let Some(Tok::Word(first)) = toks.first().cloned() else {
                nodes.push(Node::Action(self.pipeline(&toks)?));
                continue;
            };
            let rest = &toks[1..];
            match first.as_str() {
                "end" => return Ok((nodes, Stop::End)),
                "else" => return Ok((nodes, Stop::Else(rest.to_vec()))),
                "if" | "range" | "with" => {
                    let pipe = self.pipeline(rest)?;
                    let (body, end) = self.list()?;
                    let otherwise = self.tail(&first, end)?;
                    nodes.push(match first.as_str() {
                        "if" => Node::If(pipe, body, otherwise),
                        "range" => Node::Range(pipe, body, otherwise),
                        _ => Node::With(pipe, body, otherwise),
                    });
                }
                "define" => {
                    let Some(Tok::Str(n)) = rest.first() else {
                        return Err(self.err("define needs a quoted name"));
                    };
                    let (body, end) = self.list()?;
                    if !matches!(end, Stop::End) {
                        return Err(self.err(format!("define {n:?} without {{{{end}}}}")));
                    }
                    self.defines.insert(n.clone(), body);
                }
                "template" => {
                    let Some(Tok::Str(n)) = rest.first() else {
                        return Err(self.err("template needs a quoted name"));
                    };
                    let pipe = if rest.len() > 1 {
                        Some(self.pipeline(&rest[1..])?)
                    } else {
                        None
                    };
                    nodes.push(Node::Template(n.clone(), pipe));
                }
                "block" | "break" | "continue" => return Err(self.err(format!("{first} is not supported"))),
                _ => nodes.push(Node::Action(self.pipeline(&toks)?)),
            }
        }
        Ok((nodes, Stop::Eof))
    }

    /// What follows a block's body: nothing (`end`), an `else` part, or an `else if` chain (nested ifs sharing
    /// one `end`).
    fn tail(&mut self, keyword: &str, end: Stop) -> Result<Vec<Node>, TemplateError> {
        match end {
            Stop::End => Ok(Vec::new()),
            Stop::Else(t) if t.is_empty() => self.block_end(),
            Stop::Else(t) if keyword == "if" && matches!(t.first(), Some(Tok::Word(w)) if w == "if") => {
                let pipe = self.pipeline(&t[1..])?;
                let (body, end) = self.list()?;
                let otherwise = self.tail("if", end)?;
                Ok(vec![Node::If(pipe, body, otherwise)])
            }
            Stop::Else(_) => Err(self.err(format!("unsupported else clause in {keyword}"))),
            Stop::Eof => Err(self.err(format!("unexpected end of template: {keyword} without {{{{end}}}}"))),
        }
    }

    fn block_end(&mut self) -> Result<Vec<Node>, TemplateError> {
        let (nodes, end) = self.list()?;
        match end {
            Stop::End => Ok(nodes),
            _ => Err(self.err("else without {{end}}")),
        }
    }

    fn pipeline(&self, toks: &[Tok]) -> Result<Pipeline, TemplateError> {
        let mut decl = Vec::new();
        let mut assign = false;
        let mut toks = toks;
        // `$a := …`, `$a, $b := …`, `$a = …`
        let decl_end = toks.iter().position(|t| matches!(t, Tok::Declare | Tok::Assign));
        if let Some(p) = decl_end
            && toks[..p]
                .iter()
                .all(|t| matches!(t, Tok::Var(_, path) if path.is_empty()) || *t == Tok::Comma)
            && p > 0
        {
            for t in &toks[..p] {
                if let Tok::Var(v, _) = t {
                    decl.push(v.clone());
                }
            }
            assign = toks[p] == Tok::Assign;
            toks = &toks[p + 1..];
        }
        let mut commands = Vec::new();
        let mut current = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::Pipe => {
                    if current.is_empty() {
                        return Err(self.err("empty command in pipeline"));
                    }
                    commands.push(std::mem::take(&mut current));
                }
                Tok::Open => {
                    let mut depth = 1;
                    let start = i + 1;
                    while depth > 0 {
                        i += 1;
                        match toks.get(i) {
                            Some(Tok::Open) => depth += 1,
                            Some(Tok::Close) => depth -= 1,
                            None => return Err(self.err("unclosed parenthesis")),
                            _ => {}
                        }
                    }
                    let inner = self.pipeline(&toks[start..i])?;
                    let path = match toks.get(i + 1) {
                        Some(Tok::Field(p)) => {
                            i += 1;
                            p.clone()
                        }
                        _ => Vec::new(),
                    };
                    current.push(Arg::Sub(Box::new(inner), path));
                }
                Tok::Close => return Err(self.err("unexpected )")),
                Tok::Word(w) => current.push(match w.as_str() {
                    "true" => Arg::Lit(Value::Bool(true)),
                    "false" => Arg::Lit(Value::Bool(false)),
                    "nil" => Arg::Lit(Value::Null),
                    _ => Arg::Ident(w.clone()),
                }),
                Tok::Field(p) => current.push(Arg::Field(p.clone())),
                Tok::Var(v, p) => current.push(Arg::Var(v.clone(), p.clone())),
                Tok::Str(s) => current.push(Arg::Lit(Value::String(s.clone()))),
                Tok::Num(n) => current.push(Arg::Lit(Value::Number(n.clone()))),
                Tok::Dot => current.push(Arg::Dot),
                Tok::Declare | Tok::Assign | Tok::Comma => return Err(self.err("unexpected := , or =")),
            }
            i += 1;
        }
        if !current.is_empty() {
            commands.push(current);
        }
        if commands.is_empty() {
            return Err(self.err("missing value in action"));
        }
        Ok(Pipeline { decl, assign, commands })
    }
}

impl Template {
    /// Parses a template.
    pub fn parse(name: &str, src: &str) -> Result<Self, TemplateError> {
        let mut p = Parser {
            name,
            pieces: split(name, src)?,
            pos: 0,
            defines: BTreeMap::new(),
        };
        let (root, end) = p.list()?;
        match end {
            Stop::Eof => Ok(Self {
                name: name.to_owned(),
                root,
                defines: p.defines,
            }),
            Stop::End => Err(p.err("unexpected {{end}}")),
            Stop::Else(_) => Err(p.err("unexpected {{else}}")),
        }
    }

    /// Executes the template over `data`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        let mut ex = Exec {
            t: self,
            out: String::new(),
            vars: vec![("$".to_owned(), data.clone())],
            depth: 0,
            steps: 0,
        };
        ex.nodes(&self.root, data)?;
        Ok(ex.out)
    }
}

// ---------------------------------------------------------------------------------------------------- execution

struct Exec<'a> {
    t: &'a Template,
    out: String,
    vars: Vec<(String, Value)>,
    depth: usize,
    steps: usize,
}

/// Go's notion of "true" in `if`, `and`, `or`, `not`, `with`.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Go's `fmt.Sprint` of a value.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(to_text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", to_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn field<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    let m = v.as_object()?;
    if let Some(x) = m.get(name) {
        return Some(x);
    }
    let mut lower = name.to_owned();
    if let Some(first) = lower.get_mut(0..1) {
        first.make_ascii_lowercase();
    }
    m.get(&lower)
        .or_else(|| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn walk(v: Value, path: &[String]) -> Value {
    let mut cur = v;
    for p in path {
        cur = field(&cur, p).cloned().unwrap_or(Value::Null);
    }
    cur
}

impl Exec<'_> {
    fn err(&self, m: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.t.name.clone(),
            message: m.into(),
        }
    }

    fn write(&mut self, s: &str) -> Result<(), TemplateError> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(self.err("output exceeds 4 MiB"));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn var(&self, name: &str) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(format!("undefined variable {name}")))
    }

    fn nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        let mark = self.vars.len();
        for n in nodes {
            self.node(n, dot)?;
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn node(&mut self, n: &Node, dot: &Value) -> Result<(), TemplateError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(self.err("template does too much work (more than a million steps)"));
        }
        match n {
            Node::Text(t) => self.write(t),
            Node::Action(p) => {
                let v = self.pipeline(p, dot)?;
                if p.decl.is_empty() {
                    let text = to_text(&v);
                    self.write(&text)?;
                }
                Ok(())
            }
            Node::If(p, body, otherwise) => {
                let v = self.pipeline(p, dot)?;
                if truthy(&v) {
                    self.nodes(body, dot)
                } else {
                    self.nodes(otherwise, dot)
                }
            }
            Node::With(p, body, otherwise) => {
                let v = self.pipeline(p, dot)?;
                if truthy(&v) {
                    self.nodes(body, &v)
                } else {
                    self.nodes(otherwise, dot)
                }
            }
            Node::Range(p, body, otherwise) => {
                let plain = Pipeline {
                    decl: Vec::new(),
                    assign: false,
                    commands: p.commands.clone(),
                };
                let v = self.pipeline(&plain, dot)?;
                let items: Vec<(Value, Value)> = match v {
                    Value::Array(a) => a.into_iter().enumerate().map(|(i, x)| (json!(i), x)).collect(),
                    Value::Object(m) => m.into_iter().map(|(k, x)| (Value::String(k), x)).collect(),
                    Value::Null => Vec::new(),
                    Value::Number(n) => (0..n.as_u64().unwrap_or(0).min(1 << 16))
                        .map(|i| (json!(i), json!(i)))
                        .collect(),
                    other => return Err(self.err(format!("range can't iterate over {}", to_text(&other)))),
                };
                if items.is_empty() {
                    return self.nodes(otherwise, dot);
                }
                for (k, x) in items {
                    let mark = self.vars.len();
                    match p.decl.as_slice() {
                        [] => {}
                        [v] => self.vars.push((v.clone(), x.clone())),
                        [i, v, ..] => {
                            self.vars.push((i.clone(), k));
                            self.vars.push((v.clone(), x.clone()));
                        }
                    }
                    self.nodes(body, &x)?;
                    self.vars.truncate(mark);
                }
                Ok(())
            }
            Node::Template(name, p) => {
                let body = self
                    .t
                    .defines
                    .get(name)
                    .ok_or_else(|| self.err(format!("no template {name:?} defined")))?;
                let data = match p {
                    Some(p) => self.pipeline(p, dot)?,
                    None => Value::Null,
                };
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(self.err("template calls nested too deeply"));
                }
                let saved = std::mem::replace(&mut self.vars, vec![("$".to_owned(), data.clone())]);
                let r = self.nodes(body, &data);
                self.vars = saved;
                self.depth -= 1;
                r
            }
        }
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut piped: Option<Value> = None;
        for cmd in &p.commands {
            piped = Some(self.command(cmd, dot, piped)?);
        }
        let v = piped.unwrap_or(Value::Null);
        for name in &p.decl {
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| TemplateError {
                        name: self.t.name.clone(),
                        message: format!("undefined variable {name}"),
                    })?;
                slot.1 = v.clone();
            } else {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        Ok(match a {
            Arg::Dot => dot.clone(),
            Arg::Field(path) => walk(dot.clone(), path),
            Arg::Var(name, path) => walk(self.var(name)?, path),
            Arg::Lit(v) => v.clone(),
            Arg::Sub(p, path) => {
                let v = self.pipeline(p, dot)?;
                walk(v, path)
            }
            Arg::Ident(f) => self.call(f, Vec::new())?,
        })
    }

    fn command(&mut self, cmd: &[Arg], dot: &Value, piped: Option<Value>) -> Result<Value, TemplateError> {
        match cmd.first() {
            Some(Arg::Ident(f)) => {
                let f = f.clone();
                // `and` and `or` stop at the deciding argument, as Go's do.
                if (f == "and" || f == "or") && piped.is_none() {
                    let mut last = Value::Null;
                    for a in &cmd[1..] {
                        last = self.arg(a, dot)?;
                        if truthy(&last) != (f == "and") {
                            return Ok(last);
                        }
                    }
                    return Ok(last);
                }
                let mut args = Vec::new();
                for a in &cmd[1..] {
                    args.push(self.arg(a, dot)?);
                }
                args.extend(piped);
                self.call(&f, args)
            }
            Some(a) if cmd.len() == 1 => {
                if piped.is_some() {
                    return Err(self.err("can't give an argument to a non-function"));
                }
                self.arg(a, dot)
            }
            Some(_) => Err(self.err("can't give an argument to a non-function")),
            None => Err(self.err("empty command")),
        }
    }

    fn call(&self, f: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
        let n = args.len();
        let want = |k: usize| {
            if n == k {
                Ok(())
            } else {
                Err(self.err(format!("wrong number of arguments for {f}: want {k}, got {n}")))
            }
        };
        let at_least = |k: usize| {
            if n >= k {
                Ok(())
            } else {
                Err(self.err(format!("wrong number of arguments for {f}: want at least {k}, got {n}")))
            }
        };
        let s = |v: &Value| to_text(v);
        Ok(match f {
            "and" | "or" => {
                at_least(1)?;
                let and = f == "and";
                args.iter()
                    .find(|v| truthy(v) != and)
                    .cloned()
                    .unwrap_or_else(|| args[n - 1].clone())
            }
            "not" => {
                want(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "eq" => {
                at_least(2)?;
                Value::Bool(args[1..].iter().any(|b| equal(&args[0], b)))
            }
            "ne" => {
                want(2)?;
                Value::Bool(!equal(&args[0], &args[1]))
            }
            "lt" | "le" | "gt" | "ge" => {
                want(2)?;
                let ord = compare(&args[0], &args[1]).ok_or_else(|| self.err(format!("{f}: incomparable values")))?;
                Value::Bool(match f {
                    "lt" => ord.is_lt(),
                    "le" => ord.is_le(),
                    "gt" => ord.is_gt(),
                    _ => ord.is_ge(),
                })
            }
            "len" => {
                want(1)?;
                json!(match &args[0] {
                    Value::String(x) => x.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(m) => m.len(),
                    Value::Null => 0,
                    _ => return Err(self.err("len of a value that has none")),
                })
            }
            "index" => {
                at_least(1)?;
                let mut cur = args[0].clone();
                for k in &args[1..] {
                    cur = match (&cur, k) {
                        (Value::Object(m), k) => m.get(&s(k)).cloned().unwrap_or(Value::Null),
                        (Value::Array(a), Value::Number(i)) => i
                            .as_u64()
                            .and_then(|i| a.get(usize::try_from(i).ok()?))
                            .cloned()
                            .ok_or_else(|| self.err(format!("index out of range: {i}")))?,
                        (Value::Null, _) => Value::Null,
                        _ => return Err(self.err("can't index this value")),
                    };
                }
                cur
            }
            "print" => Value::String(args.iter().map(s).collect::<Vec<_>>().join("")),
            "println" => Value::String(args.iter().map(s).collect::<Vec<_>>().join(" ") + "\n"),
            "printf" => {
                at_least(1)?;
                Value::String(printf(&s(&args[0]), &args[1..]))
            }
            // Istio's functions.
            "isset" => {
                want(2)?;
                Value::Bool(args[0].as_object().is_some_and(|m| m.contains_key(&s(&args[1]))))
            }
            "annotation" => {
                want(3)?;
                let key = s(&args[1]);
                match field(&args[0], "Annotations").and_then(|a| a.get(&key)) {
                    Some(v) => Value::String(s(v)),
                    None => Value::String(s(&args[2])),
                }
            }
            "valueOrDefault" => {
                want(2)?;
                if truthy(&args[0]) {
                    args[0].clone()
                } else {
                    args[1].clone()
                }
            }
            "toJSON" | "toJson" | "structToJSON" | "protoToJSON" => {
                want(1)?;
                Value::String(args[0].to_string())
            }
            "fromJSON" | "fromJson" => {
                want(1)?;
                serde_json::from_str(&s(&args[0])).map_err(|e| self.err(format!("fromJSON: {e}")))?
            }
            "toYaml" => {
                want(1)?;
                let y = crate::yaml::to_yaml(&args[0]).map_err(|e| self.err(e.to_string()))?;
                Value::String(y.trim_end_matches('\n').to_owned())
            }
            "env" => {
                // istiod's environment: mizzen's webhook has none of Istio's, so the default applies.
                want(2)?;
                args[1].clone()
            }
            "omit" => {
                at_least(1)?;
                let mut m = args[0].as_object().cloned().unwrap_or_default();
                for k in &args[1..] {
                    m.remove(&s(k));
                }
                Value::Object(m)
            }
            // Sprig's.
            "default" => {
                want(2)?;
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            "quote" => Value::String(args.iter().map(|v| format!("{:?}", s(v))).collect::<Vec<_>>().join(" ")),
            "squote" => Value::String(args.iter().map(|v| format!("'{}'", s(v))).collect::<Vec<_>>().join(" ")),
            "toLower" | "lower" => {
                want(1)?;
                Value::String(s(&args[0]).to_lowercase())
            }
            "toUpper" | "upper" => {
                want(1)?;
                Value::String(s(&args[0]).to_uppercase())
            }
            "trim" => {
                want(1)?;
                Value::String(s(&args[0]).trim().to_owned())
            }
            "contains" => {
                want(2)?;
                Value::Bool(s(&args[1]).contains(&s(&args[0])))
            }
            "hasPrefix" => {
                want(2)?;
                Value::Bool(s(&args[1]).starts_with(&s(&args[0])))
            }
            "hasSuffix" => {
                want(2)?;
                Value::Bool(s(&args[1]).ends_with(&s(&args[0])))
            }
            "replace" => {
                want(3)?;
                Value::String(s(&args[2]).replace(&s(&args[0]), &s(&args[1])))
            }
            "split" | "splitList" => {
                want(2)?;
                json!(s(&args[1]).split(&s(&args[0])).collect::<Vec<_>>())
            }
            "join" => {
                want(2)?;
                let items = match &args[1] {
                    Value::Array(a) => a.iter().map(s).collect::<Vec<_>>(),
                    other => vec![s(other)],
                };
                Value::String(items.join(&s(&args[0])))
            }
            "indent" | "nindent" => {
                want(2)?;
                let pad = " ".repeat(usize::try_from(args[0].as_u64().unwrap_or(0)).unwrap_or(0).min(256));
                let text = s(&args[1])
                    .split('\n')
                    .map(|l| format!("{pad}{l}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                Value::String(if f == "nindent" { format!("\n{text}") } else { text })
            }
            "list" => Value::Array(args),
            "append" | "mustAppend" => {
                want(2)?;
                let mut l = args[0].as_array().cloned().unwrap_or_default();
                l.push(args[1].clone());
                Value::Array(l)
            }
            "dict" => {
                let mut m = Map::new();
                for pair in args.chunks(2) {
                    m.insert(s(&pair[0]), pair.get(1).cloned().unwrap_or(Value::Null));
                }
                Value::Object(m)
            }
            "empty" => {
                want(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            other => return Err(self.err(format!("function {other:?} not defined"))),
        })
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s`, `%v`, `%d`, `%q`, `%%`.
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb) => match args.next() {
                Some(v) => match verb {
                    'q' => out.push_str(&format!("{:?}", to_text(v))),
                    _ => out.push_str(&to_text(v)),
                },
                None => out.push_str(&format!("%!{verb}(MISSING)")),
            },
            None => out.push_str("%!(NOVERB)"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str, data: Value) -> String {
        Template::parse("t", src).unwrap().execute(&data).unwrap()
    }

    #[test]
    fn ranges_with_variables_and_trimming() {
        let data = json!({"Spec": {"containers": [{"name": "a"}, {"name": "istio-proxy"}, {"name": "b"}]}});
        let src = "x:\n{{- range $i, $c := .Spec.Containers }}\n{{- if not (eq $c.Name \"istio-proxy\") }}\n- {{ $i }}={{ $c.Name }}\n{{- end }}\n{{- end }}\n";
        assert_eq!(run(src, data), "x:\n- 0=a\n- 2=b\n");
    }

    #[test]
    fn istio_and_sprig_functions() {
        let data = json!({"ObjectMeta": {"annotations": {"k": "v"}, "labels": {"app": "web"}},
            "Values": {"global": {"proxy": {"resources": {"requests": {"cpu": "100m"}}}}}, "DeploymentMeta": {"name": "d"}});
        assert_eq!(
            run(
                "{{ annotation .ObjectMeta `k` `x` }}/{{ annotation .ObjectMeta `z` `x` }}",
                data.clone()
            ),
            "v/x"
        );
        assert_eq!(run("{{ isset .ObjectMeta.Annotations `k` }}", data.clone()), "true");
        assert_eq!(
            run(
                "{{ index .ObjectMeta.Labels `version` | default .DeploymentMeta.Name | quote }}",
                data.clone()
            ),
            "\"d\""
        );
        assert_eq!(
            run(
                "r:\n{{ toYaml .Values.global.proxy.resources | indent 2 }}",
                data.clone()
            ),
            "r:\n  requests:\n    cpu: 100m"
        );
        assert_eq!(
            run(
                "{{ $l := list }}{{ $l = append $l 1 }}{{ $l = append $l 2 }}{{ $l | join \",\" }}",
                json!({})
            ),
            "1,2"
        );
        assert_eq!(run("{{ printf \"istio.%s\" \"sa\" }}", json!({})), "istio.sa");
        assert_eq!(run("{{ valueOrDefault .Missing `default` }}", json!({})), "default");
    }

    #[test]
    fn if_else_chains_and_with() {
        let src = "{{ if eq .N 1 }}one{{ else if eq .N 2 }}two{{ else if eq .N 3 }}three{{ else }}many{{ end }}";
        for (n, want) in [(1, "one"), (2, "two"), (3, "three"), (9, "many")] {
            assert_eq!(run(src, json!({"N": n})), want);
        }
        assert_eq!(
            run("{{ with .A }}{{ .B }}{{ else }}none{{ end }}", json!({"A": {"B": "b"}})),
            "b"
        );
        assert_eq!(run("{{ with .A }}{{ .B }}{{ else }}none{{ end }}", json!({})), "none");
    }

    #[test]
    fn defines_are_callable_and_comments_vanish() {
        let src = "{{- define \"r\" }}[{{ .X }}]{{ end }}{{/* a comment with }} inside */}}{{ template \"r\" . }}";
        assert_eq!(run(src, json!({"X": 1})), "[1]");
    }

    #[test]
    fn errors_name_the_template_and_the_problem() {
        let e = Template::parse("custom", "{{ if .A }}").unwrap_err();
        assert_eq!(e.name, "custom");
        assert!(e.message.contains("end"), "{e}");
        let e = Template::parse("custom", "{{ nosuch .A }}")
            .unwrap()
            .execute(&json!({}))
            .unwrap_err();
        assert!(e.message.contains("nosuch"), "{e}");
        assert!(Template::parse("t", "{{ \"open }}").is_err());
        assert!(Template::parse("t", "{{ (.A }}").is_err());
        // Malformed input is an error, never a panic.
        for src in [
            "{{",
            "}}",
            "{{-",
            "{{ - }}",
            "{{ ( }}",
            "{{ ) }}",
            "{{ $ }}",
            "{{ . . }}",
            "{{ range }}",
            "{{ end }}",
            "{{ else }}",
            "{{ index }}",
            "{{ printf }}",
            "{{ template }}",
            "{{ $x = 1 }}",
            "{{ 1 | 2 }}",
            "{{ \"é\" }}",
            "{{-1}}",
            "{{ (index .A 5).B }}",
            "{{ index .L 9 }}",
            "{{ len 3 }}",
            "{{ lt 1 \"a\" }}",
            "{{/* x",
            "{{ range 99999999999 }}x{{ end }}",
            "{{ define \"a\" }}",
            "{{ with }}{{ end }}",
            "ä{{ .é }}ö",
        ] {
            if let Ok(t) = Template::parse("t", src) {
                let _ = t.execute(&json!({"A": [1], "L": [1, 2]}));
            }
        }
        // Work is bounded.
        let t = Template::parse(
            "t",
            "{{ define \"x\" }}{{ range 2 }}{{ template \"x\" $ }}{{ end }}{{ end }}{{ template \"x\" . }}",
        )
        .unwrap();
        assert!(t.execute(&json!({})).is_err());
        // Recursion is bounded.
        let t = Template::parse(
            "t",
            "{{ define \"x\" }}{{ template \"x\" . }}{{ end }}{{ template \"x\" . }}",
        )
        .unwrap();
        assert!(t.execute(&json!({})).is_err());
    }
}
