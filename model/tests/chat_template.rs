//! Chat templates render byte for byte what transformers' `apply_chat_template` renders, on the
//! real Qwen2.5-Instruct, Llama-3.2-Instruct and Qwen3 templates
//! (tests/fixtures/chat_templates, written by scripts/make_chat_template_fixtures.py).

use std::path::{Path, PathBuf};

use aha_model::chat_template::{ordered_json, RenderOptions, Value};
use aha_model::{ChatTemplate, ChatTemplateError, Message};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat_templates")
}

#[test]
fn renders_exactly_as_transformers() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    // Parsed as template values so that object keys keep their order (tools go through tojson).
    let expected = ordered_json(&text).unwrap();
    let cases = expected.get_attr("cases").unwrap();
    let mut checked = 0;
    for case in cases.try_iter().unwrap() {
        let model = case.get_attr("model").unwrap().to_string();
        let title = case.get_attr("title").unwrap().to_string();
        let template = ChatTemplate::from_dir(&fixtures().join(&model)).unwrap();
        let mut options = RenderOptions {
            add_generation_prompt: case.get_attr("add_generation_prompt").unwrap().is_true(),
            ..RenderOptions::default()
        };
        let tools = case.get_attr("tools").unwrap();
        if !tools.is_undefined() {
            options.tools = Some(tools);
        }
        let kwargs = case.get_attr("kwargs").unwrap();
        if !kwargs.is_undefined() {
            for key in kwargs.try_iter().unwrap() {
                options.kwargs.insert(key.to_string(), kwargs.get_item(&key).unwrap());
            }
        }
        let ours = template
            .render_with(&case.get_attr("messages").unwrap(), &options)
            .unwrap_or_else(|e| panic!("{model} / {title}: {e}"));
        let theirs = case.get_attr("expected").unwrap();
        assert_eq!(ours, theirs.as_str().unwrap(), "{model} / {title}");
        checked += 1;
    }
    assert_eq!(checked, 19);
}

#[test]
fn plain_messages_render_like_the_generic_path() {
    let template = ChatTemplate::from_dir(&fixtures().join("qwen2.5-instruct")).unwrap();
    let text = template.render(&[Message::system("Be brief."), Message::user("2 + 2?")], true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(template.special_token("eos_token"), Some("<|im_end|>"));
    assert_eq!(template.special_token("bos_token"), None);
}

#[test]
fn bos_token_given_as_an_object_is_its_content() {
    let template = ChatTemplate::from_dir(&fixtures().join("llama-3.2-instruct")).unwrap();
    assert_eq!(template.special_token("bos_token"), Some("<|begin_of_text|>"));
    let text = template.render(&[Message::user("hi")], false).unwrap();
    assert!(text.starts_with("<|begin_of_text|><|start_header_id|>system<|end_header_id|>"), "{text}");
}

#[test]
fn llama_date_defaults_to_today_through_strftime_now() {
    let template = ChatTemplate::from_dir(&fixtures().join("llama-3.2-instruct")).unwrap();
    let before = chrono::Local::now().format("%d %b %Y").to_string();
    let text = template.render(&[Message::user("hi")], true).unwrap();
    let after = chrono::Local::now().format("%d %b %Y").to_string();
    assert!(
        text.contains(&format!("Today Date: {before}\n")) || text.contains(&format!("Today Date: {after}\n")),
        "{text}"
    );
}

#[test]
fn raise_exception_becomes_an_error_naming_the_file_and_message() {
    let template = ChatTemplate::from_dir(&fixtures().join("llama-3.2-instruct")).unwrap();
    let messages = ordered_json(
        r#"[{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"function": {"name": "a", "arguments": {}}},
                                                  {"function": {"name": "b", "arguments": {}}}]}]"#,
    )
    .unwrap();
    let options =
        RenderOptions { kwargs: [("date_string".to_string(), Value::from("1 Jan 2025"))].into(), ..Default::default() };
    let error = template.render_with(&messages, &options).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, ChatTemplateError::Render { .. }));
    assert!(message.contains("tokenizer_config.json"), "{message}");
    assert!(message.contains("This model only supports single tool-calls at once!"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn tojson_matches_python_json_dumps() {
    let template = ChatTemplate::from_source(
        "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(sort_keys=true, separators=[',', ':']) }}|{{ s | tojson(ensure_ascii=true) }}",
        &[],
    )
    .unwrap();
    let x = ordered_json(r#"{"b": [1, 2.5, true, null], "a": {"é": "<tag> & \"q\"\n"}, "e": [], "f": {}}"#).unwrap();
    let options = RenderOptions {
        kwargs: [("x".to_string(), x), ("s".to_string(), Value::from("é😀\u{1}"))].into(),
        ..Default::default()
    };
    let text = template.render_with(&Value::from(Vec::<Value>::new()), &options).unwrap();
    // json.dumps(x), json.dumps(x, indent=2), json.dumps(x, sort_keys=True, separators=(',', ':')),
    // json.dumps(s, ensure_ascii=True), as Python 3.12 prints them.
    let expected = [
        r#"{"b": [1, 2.5, true, null], "a": {"é": "<tag> & \"q\"\n"}, "e": [], "f": {}}"#,
        "{\n  \"b\": [\n    1,\n    2.5,\n    true,\n    null\n  ],\n  \"a\": {\n    \"é\": \"<tag> & \\\"q\\\"\\n\"\n  },\n  \"e\": [],\n  \"f\": {}\n}",
        r#"{"a":{"é":"<tag> & \"q\"\n"},"b":[1,2.5,true,null],"e":[],"f":{}}"#,
        r#""\u00e9\ud83d\ude00\u0001""#,
    ]
    .join("|");
    assert_eq!(text, expected);
}

#[test]
fn missing_template_and_bad_syntax_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"eos_token": "</s>"}"#).unwrap();
    let error = ChatTemplate::from_dir(dir.path()).unwrap_err();
    assert!(matches!(error, ChatTemplateError::Missing { .. }), "{error}");

    std::fs::write(dir.path().join("chat_template.jinja"), "{% for m in messages %}{{ m.content }}").unwrap();
    let error = ChatTemplate::from_dir(dir.path()).unwrap_err().to_string();
    assert!(error.contains("chat_template.jinja") && error.contains("does not compile"), "{error}");
    assert!(!error.contains('\n'), "{error}");
}

#[test]
fn named_templates_use_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D{{ eos_token }}"}],
                     "eos_token": {"content": "</s>", "lstrip": false}}"#;
    std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
    let template = ChatTemplate::from_dir(dir.path()).unwrap();
    assert_eq!(template.render(&[Message::user("x")], true).unwrap(), "D</s>");
}
