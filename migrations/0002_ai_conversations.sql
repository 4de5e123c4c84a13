-- Conversations with the AI assistants (`generate_ai_response`): one per (assistant, customer
-- identifier), with its messages in order. A turn (the user's message and the answer) is stored
-- in one transaction, only when the assistant answered.
CREATE TABLE ai_conversations (
    id          uuid PRIMARY KEY,
    assistant   text NOT NULL,
    customer    text NOT NULL,          -- phone, email or CRM id, as the workflow gives it
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (assistant, customer)
);

CREATE TABLE ai_messages (
    id               bigserial PRIMARY KEY,
    conversation_id  uuid NOT NULL REFERENCES ai_conversations (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    content          text NOT NULL,
    run_id           uuid,              -- the run whose step stored it
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ai_messages_conversation ON ai_messages (conversation_id, id);
