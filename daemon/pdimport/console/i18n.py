"""The console's words in Japanese and English, and the choice between them:
the ``lang`` cookie (the switch on every page), else the browser's
Accept-Language, else English."""

from __future__ import annotations

from typing import Any

from pdimport.console.problems_ja import PROBLEM_WORDS_JA
from pdimport.label.content import format_person_name
from pdimport.problems import PROBLEM_CODES

LANGS = ("en", "ja")

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "title": "pdimport console",
        "intake_paused": "No media are taken: the appliance's disk is full. Discs stay in "
        "their drives and go on when space is back",
        "intake_paused_journal": "intake paused: journal unreachable: {e}. Discs stay in "
        "their drives; a read already running finishes into this station's spool",
        "queued_at": "the medium's files are at station {station}: the decision is queued "
        "there and done by that station",
        "station": "Station",
        "all_stations": "every station",
        "station_gone": "no heartbeat",
        "drives": "Drives",
        "today": "Today",
        "decisions": "Decisions",
        "audit": "Audit",
        "about": "About",
        "login": "Log in",
        "logout": "Log out",
        "user": "Name",
        "password": "Password",
        "bad_login": "Wrong name or password.",
        "throttled": "Too many failed attempts; try again in {s} seconds.",
        "expired": "Your session ended; please log in again.",
        "drive": "Drive",
        "state": "State",
        "disc": "Disc label",
        "patient": "Patient",
        "progress": "Progress",
        "rate": "MB/s",
        "eta": "Time left",
        "no_drives": "No drive has seen a medium since the daemon started.",
        "queues": "Queues",
        "watch_queue": "Watch folder: {n} waiting",
        "retry_queue": "Waiting for the PACS: {n}",
        "jobs_now": "Jobs in progress",
        "time": "Time",
        "source": "Source",
        "outcome": "Outcome",
        "all": "all",
        "date": "Date",
        "filter": "Show",
        "summary": "{done} of {total} imported",
        "job": "Job",
        "studies": "Studies",
        "series": "Series",
        "instances": "Instances",
        "sent_of": "Sent / objects",
        "problems": "Problems",
        "label": "Label",
        "reprint": "Reprint the label",
        "retry": "Retry delivery now",
        "decisions_none": "No job waits for a decision.",
        "reasons": "Why it is held",
        "on_disc": "On the disc",
        "candidates": "Local patients that may match",
        "release_to": "Release as this patient",
        "local_id": "Local patient ID",
        "release_typed": "Release under the typed ID",
        "keep_foreign": "Release under the disc's ID",
        "discard": "Discard",
        "reason": "Reason",
        "confirm": "Confirm",
        "cancel": "Cancel",
        "confirm_q": "Please confirm this decision",
        "result": "Result",
        "verify": "Verify the audit trail",
        "export": "Export",
        "since": "From",
        "until": "To",
        "version": "Version",
        "settings": "Settings in force",
        "destinations": "Destinations",
        "forbidden": "Your role ({role}) may not do this.",
        "not_found": "Not found.",
        "hold_error": "Nothing was changed: {e}",
        "signed_in": "Logged in as {name} ({role})",
        "users": "Users",
        "role": "Role",
        "role_viewer": "viewer (sees)",
        "role_operator": "operator (decides)",
        "role_admin": "admin (manages users)",
        "add_user": "Add the user",
        "remove_user": "Remove",
        "reset_password": "Set the password",
        "new_password": "New password",
        "user_added": "User {name} ({role}) saved.",
        "user_removed": "User {name} removed.",
        "last_sent": "Last instance acknowledged",
        "last_echo": "Last C-ECHO",
        "echo_now": "Test the connections now (C-ECHO)",
        "breaks_at": "The trail breaks at record {n}",
        "printed": "Label printed: {detail}",
        "not_printed": "The label was not printed: {detail}",
        "retry_queued": "Delivery is retried now.",
        "retried": "Delivered again: {outcome}.",
        "user_exists": "User {name} exists already: set their password below.",
        "password_reset": "Password of {name} set.",
        "not_yourself": "You cannot remove your own account.",
        "last_admin": "The last admin cannot be removed or lose the admin role.",
        "preview": "Preview",
        "kind_image": "image",
        "kind_rt": "RT",
        "kind_ai": "AI result",
        "kind_document": "document",
        "kind_sr": "report (SR)",
        "kind_other": "other",
        "other_content": "Other Content (not DICOM)",
        "converted_to": "converted to DICOM",
        "files": "files",
        "phase_reading": "reading",
        "phase_delivering": "delivering",
        "phase_": "",
    },
    "ja": {
        "title": "pdimport 操作画面",
        "intake_paused": "装置のディスクが満杯のため、媒体を受け付けていません。ディスクはドライブに残り、"
        "空きができると再開します",
        "intake_paused_journal": "取り込み一時停止：ジャーナルに接続できません：{e}。ディスクはドライブに残り、"
        "読み取り中の媒体はこのステーションのスプールに読み終えます",
        "queued_at": "媒体のファイルはステーション {station} にあります。判断はそこで実行されるよう登録しました",
        "station": "ステーション",
        "all_stations": "全ステーション",
        "station_gone": "応答なし",
        "drives": "ドライブ",
        "today": "本日",
        "decisions": "要判断",
        "audit": "監査",
        "about": "情報",
        "login": "ログイン",
        "logout": "ログアウト",
        "user": "ユーザー名",
        "password": "パスワード",
        "bad_login": "ユーザー名またはパスワードが違います。",
        "throttled": "失敗が多すぎます。{s} 秒後に再試行してください。",
        "expired": "セッションが終了しました。再度ログインしてください。",
        "drive": "ドライブ",
        "state": "状態",
        "disc": "ディスク名",
        "patient": "患者",
        "progress": "進捗",
        "rate": "MB/秒",
        "eta": "残り時間",
        "no_drives": "起動後、まだ媒体が挿入されていません。",
        "queues": "待ち行列",
        "watch_queue": "監視フォルダ: {n} 件待ち",
        "retry_queue": "PACS 送信待ち: {n} 件",
        "jobs_now": "処理中のジョブ",
        "time": "時刻",
        "source": "取込元",
        "outcome": "結果",
        "all": "すべて",
        "date": "日付",
        "filter": "表示",
        "summary": "{total} 件中 {done} 件取込完了",
        "job": "ジョブ",
        "studies": "検査",
        "series": "シリーズ",
        "instances": "画像数",
        "sent_of": "送信済 / 全数",
        "problems": "問題",
        "label": "ラベル",
        "reprint": "ラベルを再印刷",
        "retry": "今すぐ再送信",
        "decisions_none": "判断待ちのジョブはありません。",
        "reasons": "保留の理由",
        "on_disc": "ディスク上の情報",
        "candidates": "該当しうる院内患者",
        "release_to": "この患者として登録",
        "local_id": "院内患者ID",
        "release_typed": "入力したIDで登録",
        "keep_foreign": "ディスクのIDのまま登録",
        "discard": "破棄",
        "reason": "理由",
        "confirm": "確定",
        "cancel": "取消",
        "confirm_q": "この判断を確定してください",
        "result": "結果",
        "verify": "監査証跡を検証",
        "export": "書き出し",
        "since": "開始日",
        "until": "終了日",
        "version": "バージョン",
        "settings": "現在の設定",
        "destinations": "送信先",
        "forbidden": "この操作は権限（{role}）では行えません。",
        "not_found": "見つかりません。",
        "hold_error": "変更されませんでした: {e}",
        "signed_in": "{name}（{role}）でログイン中",
        "users": "ユーザー",
        "role": "権限",
        "role_viewer": "閲覧者（見るのみ）",
        "role_operator": "操作者（判断する）",
        "role_admin": "管理者（ユーザー管理）",
        "add_user": "ユーザーを追加",
        "remove_user": "削除",
        "reset_password": "パスワードを設定",
        "new_password": "新しいパスワード",
        "user_added": "ユーザー {name}（{role}）を保存しました。",
        "user_removed": "ユーザー {name} を削除しました。",
        "last_sent": "最後に受領された画像",
        "last_echo": "最後の C-ECHO",
        "echo_now": "今すぐ接続を確認（C-ECHO）",
        "breaks_at": "監査証跡は記録 {n} で途切れています",
        "printed": "ラベルを印刷しました: {detail}",
        "not_printed": "ラベルを印刷できませんでした: {detail}",
        "retry_queued": "今すぐ再送信します。",
        "retried": "再送信しました: {outcome}。",
        "user_exists": "ユーザー {name} は既に存在します。下でパスワードを設定してください。",
        "password_reset": "{name} のパスワードを設定しました。",
        "not_yourself": "自分自身のアカウントは削除できません。",
        "last_admin": "最後の管理者は削除できず、管理者権限も外せません。",
        "preview": "プレビュー",
        "kind_image": "画像",
        "kind_rt": "放射線治療（RT）",
        "kind_ai": "AI 結果",
        "kind_document": "文書",
        "kind_sr": "構造化レポート（SR）",
        "kind_other": "その他",
        "other_content": "DICOM 以外のファイル（Other Content）",
        "converted_to": "DICOM に変換済み",
        "files": "ファイル",
        "phase_reading": "読み取り中",
        "phase_delivering": "送信中",
        "phase_": "",
    },
}

#: A job's state in plain words: (en, ja).
OUTCOME_WORDS: dict[str, tuple[str, str]] = {
    "imported": ("imported", "取込完了"),
    "held": ("needs a decision", "判断待ち"),
    "partial": ("partly delivered", "一部のみ送信"),
    "waiting_for_destination": ("waiting for the PACS", "PACS 送信待ち"),
    "failed": ("failed", "失敗"),
    "discarded": ("discarded", "破棄"),
    "scanned": ("inventory only", "確認のみ"),
    "active": ("in progress", "処理中"),
}


def pick_lang(cookie: str | None, accept_language: str | None) -> str:
    """``ja`` or ``en``: the switch's cookie, else the first language the browser names."""
    if cookie in LANGS:
        return str(cookie)
    weighted = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            weight = 0.0
        weighted.append((-weight, i, tag.strip().lower().split("-")[0]))
    for _w, _i, tag in sorted(weighted):
        if tag in LANGS:
            return tag
    return "en"


class Words:
    """``t("key", n=3)`` in one language (the templates call it)."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in LANGS else "en"
        self._table = STRINGS[self.lang]

    def __call__(self, key: str, **fields: Any) -> str:
        text = self._table.get(key, STRINGS["en"].get(key, key))
        return text.format(**fields) if fields else text

    def outcome(self, state: str) -> str:
        en, ja = OUTCOME_WORDS.get(state, OUTCOME_WORDS["active"])
        return ja if self.lang == "ja" else en

    def problem(self, code: str) -> str:
        """What a problem code means, in this language (English when the
        code has no Japanese words yet, the code itself when it is unknown)."""
        english = PROBLEM_CODES.get(code, ("", code))[1]
        return PROBLEM_WORDS_JA.get(code, english) if self.lang == "ja" else english

    def person(self, pn: Any) -> str:
        """A Patient's Name for this language: the kanji name first on a
        Japanese page, the alphabetic one first on an English page."""
        main, alpha = format_person_name(pn)
        if self.lang == "ja":
            return f"{main} / {alpha}" if alpha else main
        return f"{alpha} ({main})" if alpha else main
