//! Chat framing against the OpenAI cookbook's published examples ("How to count tokens with
//! tiktoken"): the messages, tools and expected totals are the cookbook's, whose counts it
//! reports as matching the API's `prompt_tokens`.

use serde_json::{Value, json};
use sluice_core::{
    ChatMessageView, Encoding, REPLY_PRIMING, TOKENS_PER_MESSAGE, TokenCounter, count_chat_json,
    count_text,
};

fn cookbook_messages() -> Vec<Value> {
    vec![
        json!({"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."}),
        json!({"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."}),
        json!({"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."}),
        json!({"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."}),
        json!({"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."}),
        json!({"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}),
    ]
}

#[test]
fn cookbook_six_message_example_counts_129_and_124() {
    let messages = cookbook_messages();
    for model in ["gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-4", "gpt-4-0613"] {
        let count = count_chat_json(model, &messages, None);
        assert_eq!(count.tokens, 129, "{model}");
        assert_eq!(count.encoding, Encoding::Cl100kBase);
        assert!(count.exact);
    }
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "gpt-4o-mini-2024-07-18",
    ] {
        let count = count_chat_json(model, &messages, None);
        assert_eq!(count.tokens, 124, "{model}");
        assert_eq!(count.encoding, Encoding::O200kBase);
        assert!(count.exact);
    }
}

fn weather_tool() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["location"]
            }
        }
    }])
}

#[test]
fn cookbook_tools_example_counts_101_and_105() {
    let messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."}),
        json!({"role": "user", "content": "What's the weather like in San Francisco?"}),
    ];
    let tools = weather_tool();
    for (model, expected) in [
        ("gpt-4o", 101),
        ("gpt-4o-mini", 101),
        ("gpt-3.5-turbo", 105),
        ("gpt-4", 105),
    ] {
        let count = count_chat_json(model, &messages, Some(&tools));
        assert_eq!(count.tokens, expected, "{model}");
        assert!(count.exact, "{model}");
    }
}

#[test]
fn framing_is_the_sum_of_the_rule() {
    // The rule spelled out by hand for one conversation, per encoding.
    let messages = cookbook_messages();
    for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
        let mut expected = REPLY_PRIMING;
        for m in &messages {
            expected += TOKENS_PER_MESSAGE;
            for (key, value) in m.as_object().unwrap() {
                expected += count_text(encoding, value.as_str().unwrap());
                if key == "name" {
                    expected += 1;
                }
            }
        }
        let views: Vec<_> = messages.iter().map(ChatMessageView::from_json).collect();
        assert_eq!(
            TokenCounter::exact(encoding)
                .count_chat(&views, None)
                .tokens,
            expected
        );
    }
}

#[test]
fn anthropic_and_unknown_models_get_a_conservative_estimate() {
    let messages = cookbook_messages();
    let exact_cl100k = count_chat_json("gpt-4", &messages, None).tokens;
    for model in [
        "claude-sonnet-4-5",
        "claude-3-5-haiku-20241022",
        "mock-1",
        "gemini-2.5-pro",
    ] {
        let count = count_chat_json(model, &messages, None);
        assert!(!count.exact, "{model}");
        assert_eq!(count.encoding, Encoding::Cl100kBase);
        assert_eq!(count.tokens, (exact_cl100k * 125).div_ceil(100), "{model}");
    }
}

#[test]
fn typed_messages_view_the_same_as_json() {
    let m = json!({"role": "user", "name": "x", "content": "hello"});
    let extra = m.as_object().unwrap().clone();
    let typed = ChatMessageView::from_parts("user", m.get("content"), &extra);
    assert_eq!(typed, ChatMessageView::from_json(&m));
}
