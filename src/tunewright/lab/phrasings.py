"""Built-in instruction phrasings of the lab's instruction tasks, ten per task, FLAN style.

FLAN (Wei et al. 2022, "Finetuned Language Models Are Zero-Shot Learners") writes each task
through about ten templates so the model learns the task, not one wording; `data.datasets[].phrasings:
<task name>` picks a set below (data/phrasings.py applies it). A template is the user turn: `{instruction}`
is the row's instruction, `{input}` its input; a template that does not place `{input}` keeps the
input where the row format puts it (alpaca's "### Input:" block, or after the instruction). Some
templates drop the task's fixed instruction and say it in other words, as FLAN's do.
"""

from __future__ import annotations

__all__ = ["PHRASING_SETS"]

PHRASING_SETS: dict[str, tuple[str, ...]] = {
    # instruction: "What is 37 + 58?" (no input)
    "arithmetic": (
        "{instruction}",
        "Answer with a number only. {instruction}",
        "{instruction} Reply with just the result.",
        "Solve this arithmetic problem: {instruction}",
        "Q: {instruction}\nA:",
        "Here is a maths question. {instruction}",
        "{instruction}\n\nGive the answer as an integer.",
        "Work out the following. {instruction}",
        "Please compute: {instruction}",
        "Mental arithmetic: {instruction} What do you get?",
    ),
    # instruction: "Reverse the letters of the word.", input: the word
    "string_skills": (
        "{instruction}",
        "{instruction}\n\nWord: {input}",
        "{instruction} The word is \"{input}\".",
        "Word: {input}\n\n{instruction}",
        "Here is a word: {input}. {instruction}",
        "{input}\n\nTask: {instruction}",
        "Consider the word {input}. {instruction} Answer briefly.",
        "Look at \"{input}\". {instruction}",
        "Letter puzzle. {instruction}\nWord: {input}\nAnswer:",
        "Take the word {input}. {instruction}",
    ),
    # instruction: "Summarize the dialogue in one sentence.", input: the dialogue
    "dialogue_summary": (
        "{instruction}",
        "{instruction}\n\n{input}",
        "{input}\n\nBriefly summarize that dialogue.",
        "Dialogue:\n{input}\n\nWhat is a one-sentence summary of this conversation?",
        "{input}\n\nWrite a short summary of the conversation above.",
        "Summarize this conversation in a single sentence:\n\n{input}",
        "Here is a conversation:\n{input}\n\nWhat happened in it? Answer in one sentence.",
        "{input}\n\nTL;DR in one sentence:",
        "Read the dialogue and sum it up in one sentence.\n\n{input}",
        "Conversation:\n{input}\n\nOne-sentence summary:",
    ),
    # instruction: "Extract the person's details as JSON.", input: a sentence about a person
    "extraction": (
        "{instruction}",
        "{instruction}\n\n{input}",
        "{input}\n\nTurn the sentence above into JSON.",
        "Sentence: {input}\n\nGive the person's details as a JSON object.",
        "Read this and extract the person's details as JSON: {input}",
        "{input}\n\nWhat are this person's details? Answer in JSON.",
        "Extract structured data (JSON) about the person in this text.\n\n{input}",
        "Text: {input}\nJSON:",
        "Parse the person described here into JSON.\n\n{input}",
        "Convert to a JSON record: {input}",
    ),
    # instruction: a question, input: the paragraph(s) that answer it
    "world_qa": (
        "{instruction}",
        "{input}\n\n{instruction}",
        "Read the text and answer the question.\n\nText: {input}\n\nQuestion: {instruction}",
        "{input}\n\nBased on the text above: {instruction}",
        "Question: {instruction}\n\nContext: {input}\n\nAnswer in a few words.",
        "Answer the question using the passage.\nPassage: {input}\nQuestion: {instruction}",
        "{instruction}\n\nUse this information: {input}",
        "Here is some background: {input}\n\nNow answer: {instruction}",
        "{input}\n\nQ: {instruction}\nA:",
        "Short answer only. {instruction}\n\n{input}",
    ),
}
