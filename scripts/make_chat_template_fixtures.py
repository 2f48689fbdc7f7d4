#!/usr/bin/env python3
"""Writes the chat-template fixtures that model/tests/chat_template.rs checks byte for byte.

For each template (Qwen2.5-Instruct, Llama-3.2-Instruct, Qwen3) it writes a tokenizer folder under
tests/fixtures/chat_templates/NAME/ (tokenizer_config.json, and chat_template.jinja for Qwen3, the
way transformers 5 saves it), loads that folder with transformers' AutoTokenizer (no Hub access:
the tokenizer.json is the tiny Qwen2 fixture's) and renders conversations with
`apply_chat_template(messages, tokenize=False, ...)`. The results go to
tests/fixtures/chat_templates/expected.json. The template texts are the ones the model
repositories ship, written out here.

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install transformers==5.24.0 jinja2
    /tmp/tfenv/bin/python scripts/make_chat_template_fixtures.py
"""

import json
import shutil
import tempfile
from pathlib import Path

import transformers
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "chat_templates"
TOKENIZER_JSON = ROOT / "tests" / "fixtures" / "models" / "qwen2" / "tokenizer.json"

QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

LLAMA32 = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

QWEN3 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# Where each template lives and how the special tokens are written: the Llama folder writes its
# bos_token as an AddedToken object (the older format), the others as plain strings.
MODELS = {
    "qwen2.5-instruct": {
        "config": {
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": QWEN25,
        },
    },
    "llama-3.2-instruct": {
        "config": {
            "bos_token": {
                "__type": "AddedToken",
                "content": "<|begin_of_text|>",
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
            },
            "eos_token": "<|eot_id|>",
            "chat_template": LLAMA32,
        },
    },
    "qwen3": {
        "config": {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "jinja": QWEN3,
    },
}

SYSTEM = {"role": "system", "content": "You are a careful mathematician. Answer in one line.  "}
USER = {"role": "user", "content": "What is 12 + 35? Put the answer in \\boxed{}."}
MULTI_TURN = [
    SYSTEM,
    USER,
    {"role": "assistant", "content": "The sum is \\boxed{47}."},
    {"role": "user", "content": "And 47 × 2 — \"double\" it, then add 'one'?\n"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluates an arithmetic expression — exactly.",
            "parameters": {
                "type": "object",
                "properties": {
                    "expression": {"type": "string", "description": "e.g. \"1 + 2\""},
                    "precision": {"type": "integer", "minimum": 0, "default": 2},
                    "scale": {"type": "number", "default": 0.5},
                },
                "required": ["expression"],
            },
        },
    }
]
TOOL_TURN = [
    {"role": "user", "content": "Compute 12 * 35 with the calculator."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "12 * 35", "precision": 0}}}
        ],
    },
    {"role": "tool", "content": "420"},
]
QWEN3_THINKING = [
    USER,
    {"role": "assistant", "content": "<think>\n12 + 35: units 7, tens 4.\n</think>\n\n\\boxed{47}"},
    {"role": "user", "content": "Now 47 - 5?"},
    {"role": "assistant", "content": "\\boxed{42}", "reasoning_content": "\n47 - 5 = 42\n"},
]

CASES = [
    ("qwen2.5-instruct", "user only", [USER], True, None, {}),
    ("qwen2.5-instruct", "system and user", [SYSTEM, USER], True, None, {}),
    ("qwen2.5-instruct", "multi-turn", MULTI_TURN, True, None, {}),
    ("qwen2.5-instruct", "multi-turn, no generation prompt", MULTI_TURN, False, None, {}),
    ("qwen2.5-instruct", "tools", TOOL_TURN, True, TOOLS, {}),
    ("llama-3.2-instruct", "user only", [USER], True, None, {"date_string": "05 Mar 2025"}),
    ("llama-3.2-instruct", "system and user", [SYSTEM, USER], True, None, {"date_string": "05 Mar 2025"}),
    ("llama-3.2-instruct", "multi-turn", MULTI_TURN, True, None, {"date_string": "05 Mar 2025"}),
    ("llama-3.2-instruct", "multi-turn, no generation prompt", MULTI_TURN, False, None, {"date_string": "05 Mar 2025"}),
    ("llama-3.2-instruct", "tools", TOOL_TURN, True, TOOLS, {"date_string": "05 Mar 2025"}),
    (
        "llama-3.2-instruct",
        "tools in the system message",
        TOOL_TURN,
        True,
        TOOLS,
        {"date_string": "05 Mar 2025", "tools_in_user_message": False},
    ),
    ("qwen3", "user only", [USER], True, None, {}),
    ("qwen3", "system and user", [SYSTEM, USER], True, None, {}),
    ("qwen3", "thinking disabled", [SYSTEM, USER], True, None, {"enable_thinking": False}),
    ("qwen3", "multi-turn", MULTI_TURN, True, None, {}),
    ("qwen3", "multi-turn, no generation prompt", MULTI_TURN, False, None, {}),
    ("qwen3", "reasoning in history", QWEN3_THINKING, False, None, {}),
    ("qwen3", "reasoning in history, generation prompt", QWEN3_THINKING[:3], True, None, {}),
    ("qwen3", "tools", TOOL_TURN, True, TOOLS, {}),
]


def write_folders():
    for name, spec in MODELS.items():
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer_config.json").write_text(json.dumps(spec["config"], indent=2, ensure_ascii=False) + "\n")
        if "jinja" in spec:
            (folder / "chat_template.jinja").write_text(spec["jinja"])


def load(name):
    scratch = Path(tempfile.mkdtemp())
    for file in (OUT / name).iterdir():
        shutil.copy(file, scratch / file.name)
    shutil.copy(TOKENIZER_JSON, scratch / "tokenizer.json")
    return AutoTokenizer.from_pretrained(scratch)


def main():
    write_folders()
    tokenizers = {name: load(name) for name in MODELS}
    cases = []
    for model, title, messages, add_generation_prompt, tools, kwargs in CASES:
        text = tokenizers[model].apply_chat_template(
            messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
        case = {"model": model, "title": title, "messages": messages, "add_generation_prompt": add_generation_prompt}
        if tools is not None:
            case["tools"] = tools
        if kwargs:
            case["kwargs"] = kwargs
        case["expected"] = text
        cases.append(case)
    expected = {"transformers": transformers.__version__, "cases": cases}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT / 'expected.json'}")


if __name__ == "__main__":
    main()
