//! The tools (MCP server/tools): their definitions for `tools/list`, their calls, and the
//! per-caller notes they keep in memory. A caller is the `x-user-id` jwt-authz set; one
//! caller's notes are never shown to another, except to role `admin` through `list_all_notes`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::jsonrpc::{INVALID_PARAMS, RpcError};
use crate::Identity;

const MAX_ECHO_CHARS: usize = 1024;
const MAX_NOTE_CHARS: usize = 280;
const MAX_NOTES_PER_CALLER: usize = 50;
/// Bounds the memory a stream of distinct callers can take.
const MAX_CALLERS: usize = 1000;
/// Bounds the answer of `list_all_notes`.
const MAX_CALLERS_LISTED: usize = 100;

/// Notes by caller id, shared by all requests (the server keeps no sessions, so this is the
/// only state a caller has).
#[derive(Debug, Clone, Default)]
pub struct Notes {
    inner: Arc<Mutex<NoteBook>>,
}

#[derive(Debug, Default)]
struct NoteBook {
    next_id: u64,
    by_caller: HashMap<String, Vec<Note>>,
}

#[derive(Debug, Clone, Serialize)]
struct Note {
    id: u64,
    text: String,
}

impl Notes {
    fn book(&self) -> MutexGuard<'_, NoteBook> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `tools/list` result (MCP server/tools, "Listing Tools"). `list_all_notes` is listed to
/// admins only. Every schema closes its object (`additionalProperties: false`, the form
/// server/tools "Tool" recommends for tools without parameters).
pub(super) fn list(who: &Identity) -> Value {
    let no_arguments = json!({"type": "object", "additionalProperties": false});
    let text = |max: usize, description: &str| {
        json!({
            "type": "object",
            "properties": {"text": {
                "type": "string", "minLength": 1, "maxLength": max, "description": description,
            }},
            "required": ["text"],
            "additionalProperties": false,
        })
    };
    let mut tools = vec![
        json!({
            "name": "whoami",
            "description": "The caller as the authorization proxy described it: id, name, role.",
            "inputSchema": no_arguments,
        }),
        json!({
            "name": "echo",
            "description": "Returns its text argument.",
            "inputSchema": text(MAX_ECHO_CHARS, "the text to return"),
        }),
        json!({
            "name": "add_note",
            "description": format!("Saves a note that only the caller can list (at most {MAX_NOTES_PER_CALLER})."),
            "inputSchema": text(MAX_NOTE_CHARS, "the note"),
        }),
        json!({
            "name": "list_notes",
            "description": "The caller's own notes, oldest first.",
            "inputSchema": no_arguments,
        }),
    ];
    if is_admin(who) {
        tools.push(json!({
            "name": "list_all_notes",
            "description": format!("Every caller's notes (role admin only; the first {MAX_CALLERS_LISTED} callers by id)."),
            "inputSchema": no_arguments,
        }));
    }
    json!({"tools": tools})
}

/// A `tools/call` (MCP server/tools, "Calling Tools"). A request that does not fit the
/// CallToolRequest schema, or names no tool of this server, is a protocol error; bad
/// arguments and refusals are tool execution errors, `isError: true`, so that a model can
/// correct itself (server/tools, "Error Handling").
pub(super) fn call(
    params: &Map<String, Value>,
    who: &Identity,
    notes: &Notes,
) -> Result<Value, RpcError> {
    let Some(Value::String(name)) = params.get("name") else {
        return Err(RpcError::new(INVALID_PARAMS, "name must be a string"));
    };
    let empty = Map::new();
    let arguments = match params.get("arguments") {
        None => &empty,
        Some(Value::Object(arguments)) => arguments,
        Some(_) => return Err(RpcError::new(INVALID_PARAMS, "arguments must be an object")),
    };
    let outcome = match name.as_str() {
        "whoami" => no_arguments(arguments).map(|()| whoami(who)),
        "echo" => text_argument(arguments, MAX_ECHO_CHARS).map(str::to_owned),
        "add_note" => {
            text_argument(arguments, MAX_NOTE_CHARS).and_then(|t| add_note(notes, who, t))
        }
        "list_notes" => no_arguments(arguments).map(|()| list_notes(notes, who)),
        "list_all_notes" => no_arguments(arguments).and_then(|()| list_all_notes(notes, who)),
        _ => return Err(RpcError::new(INVALID_PARAMS, "unknown tool")),
    };
    Ok(match outcome {
        Ok(text) => tool_result(text, false),
        Err(reason) => tool_result(reason, true),
    })
}

fn tool_result(text: String, is_error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": is_error})
}

fn is_admin(who: &Identity) -> bool {
    who.role.as_deref() == Some("admin")
}

fn no_arguments(arguments: &Map<String, Value>) -> Result<(), String> {
    if arguments.is_empty() {
        Ok(())
    } else {
        Err("this tool takes no arguments".into())
    }
}

/// The one argument `text`: a string of 1 to `max` characters (JSON Schema's `maxLength`
/// counts characters, not bytes), and nothing else.
fn text_argument(arguments: &Map<String, Value>, max: usize) -> Result<&str, String> {
    if arguments.keys().any(|k| k != "text") {
        return Err("the only argument is text".into());
    }
    match arguments.get("text") {
        None => Err("text is required".into()),
        Some(Value::String(text)) if text.is_empty() => Err("text must not be empty".into()),
        Some(Value::String(text)) if text.chars().count() > max => {
            Err(format!("text must be at most {max} characters"))
        }
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err("text must be a string".into()),
    }
}

fn whoami(who: &Identity) -> String {
    json!({"id": who.id, "name": who.username, "role": who.role}).to_string()
}

fn add_note(notes: &Notes, who: &Identity, text: &str) -> Result<String, String> {
    let mut book = notes.book();
    if !book.by_caller.contains_key(&who.id) && book.by_caller.len() >= MAX_CALLERS {
        return Err("the server keeps no more callers' notes".into());
    }
    if book.by_caller.get(&who.id).map_or(0, Vec::len) >= MAX_NOTES_PER_CALLER {
        return Err(format!("at most {MAX_NOTES_PER_CALLER} notes per caller"));
    }
    book.next_id += 1;
    let note = Note {
        id: book.next_id,
        text: text.to_owned(),
    };
    book.by_caller.entry(who.id.clone()).or_default().push(note);
    Ok(format!("note {} saved", book.next_id))
}

fn list_notes(notes: &Notes, who: &Identity) -> String {
    let book = notes.book();
    let mine = book.by_caller.get(&who.id).map_or(&[][..], Vec::as_slice);
    json!({"owner": who.id, "notes": mine}).to_string()
}

/// Defence in depth: jwt-authz sees only the path `/mcp`, not which tool is called, so the
/// role check for this tool can only be made here.
fn list_all_notes(notes: &Notes, who: &Identity) -> Result<String, String> {
    if !is_admin(who) {
        return Err("list_all_notes is for role admin only".into());
    }
    let book = notes.book();
    let sorted: BTreeMap<&String, &Vec<Note>> = book.by_caller.iter().collect();
    let listed: BTreeMap<_, _> = sorted.into_iter().take(MAX_CALLERS_LISTED).collect();
    let truncated = book.by_caller.len() > MAX_CALLERS_LISTED;
    Ok(json!({"notes": listed, "truncated": truncated}).to_string())
}
