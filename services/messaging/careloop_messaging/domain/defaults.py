"""Built-in English and Spanish templates for confirmations, reminders, reschedule offers,
waitlist offers (and their "that time is gone" follow-up), referrals waiting to be
booked and check-ups falling due (care-gap outreach).

They use only the insecure-channel fields, so one set serves every channel. SMS bodies
carry the practice name first (carriers want the sender identified), the reply keywords
(C and R; the option numbers for offers), and STOP/HELP wording as US carriers and CTIA
guidelines expect; with a 40 character practice name, a 40 character link and three
offered times they stay within 320 characters.
"""

from __future__ import annotations

from careloop_messaging.domain.templates import Channel, MessageKind, MessageTemplate, TemplateKey

FALLBACK_LANGUAGE = "en"

_WHEN = "{{ appointment_date }} at {{ appointment_time }}"
_CUANDO = "el {{ appointment_date }} a las {{ appointment_time }}"

# kind -> language -> (SMS body, email subject, email/portal text body, HTML paragraph)
_TEXT: dict[MessageKind, dict[str, tuple[str, str, str, str]]] = {
    MessageKind.CONFIRMATION: {
        "en": (
            "{{ practice_name }}: your appointment is booked for " + _WHEN + ". "
            "Details: {{ secure_link }} Reply C to confirm, R to reschedule. "
            "Reply STOP to opt out, HELP for help.",
            "Appointment confirmation from {{ practice_name }}",
            "Your appointment is booked for " + _WHEN + ".\n\n"
            "See the details, confirm or reschedule here: {{ secure_link }}",
            "Your appointment is booked for " + _WHEN + ".",
        ),
        "es": (
            "{{ practice_name }}: su cita es " + _CUANDO + ". "
            "Detalles: {{ secure_link }} Responda C para confirmar, R para cambiarla. "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Confirmación de cita de {{ practice_name }}",
            "Su cita está programada " + _CUANDO + ".\n\n"
            "Vea los detalles, confirme o cambie la cita aquí: {{ secure_link }}",
            "Su cita está programada " + _CUANDO + ".",
        ),
    },
    MessageKind.REMINDER: {
        "en": (
            "{{ practice_name }}: reminder of your appointment on " + _WHEN + ". "
            "Details: {{ secure_link }} Reply C to confirm, R to reschedule. "
            "Reply STOP to opt out, HELP for help.",
            "Appointment reminder from {{ practice_name }}",
            "This is a reminder of your appointment on " + _WHEN + ".\n\n"
            "See the details, confirm or reschedule here: {{ secure_link }}",
            "This is a reminder of your appointment on " + _WHEN + ".",
        ),
        "es": (
            "{{ practice_name }}: le recordamos su cita " + _CUANDO + ". "
            "Detalles: {{ secure_link }} Responda C para confirmar, R para cambiarla. "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Recordatorio de cita de {{ practice_name }}",
            "Le recordamos su cita " + _CUANDO + ".\n\n"
            "Vea los detalles, confirme o cambie la cita aquí: {{ secure_link }}",
            "Le recordamos su cita " + _CUANDO + ".",
        ),
    },
    # Offers answer the patient's own R reply: they list the numbered times (`options`,
    # already in the location's zone) and ask for the number back. Email replies are not
    # read, so the email versions point to the text message and the secure link.
    MessageKind.RESCHEDULE_OFFER: {
        "en": (
            "{{ practice_name }}: new times for your appointment: {{ options }}. "
            "Reply {{ option_numbers }} to choose. Details: {{ secure_link }} "
            "Reply STOP to opt out, HELP for help.",
            "New appointment times from {{ practice_name }}",
            "New times are open for your appointment: {{ options }}.\n\n"
            "Reply {{ option_numbers }} to our text message to choose one, "
            "or see your appointment here: {{ secure_link }}",
            "New times are open for your appointment: {{ options }}.",
        ),
        "es": (
            "{{ practice_name }}: nuevas horas para su cita: {{ options }}. "
            "Responda {{ option_numbers }} para elegir. Detalles: {{ secure_link }} "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Nuevas horas de cita de {{ practice_name }}",
            "Hay nuevas horas disponibles para su cita: {{ options }}.\n\n"
            "Responda {{ option_numbers }} a nuestro mensaje de texto para elegir una, "
            "o vea su cita aquí: {{ secure_link }}",
            "Hay nuevas horas disponibles para su cita: {{ options }}.",
        ),
    },
    # A waitlist offer is what the patient asked for by joining the waitlist: the freed
    # date and time, and Y to take it. Several patients get the same offer and the first
    # Y wins, so the text says so. Email replies are not read: the email versions point
    # to the text message and the secure link.
    MessageKind.WAITLIST_OFFER: {
        "en": (
            "{{ practice_name }}: an earlier time opened up: " + _WHEN + ". "
            "Reply Y to take it (first reply gets it). Details: {{ secure_link }} "
            "Reply STOP to opt out, HELP for help.",
            "An earlier appointment time from {{ practice_name }}",
            "An earlier time opened up: " + _WHEN + ". It is offered to a few patients on "
            "our waitlist and the first to answer gets it.\n\n"
            "Reply Y to our text message to take it, or see it here: {{ secure_link }}",
            "An earlier time opened up: " + _WHEN + ".",
        ),
        "es": (
            "{{ practice_name }}: hay una cita antes: " + _CUANDO + ". "
            "Responda Y para tomarla (la primera respuesta la obtiene). "
            "Detalles: {{ secure_link }} "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Una cita más pronto de {{ practice_name }}",
            "Hay una cita disponible más pronto, " + _CUANDO + ". Se ofrece a varios "
            "pacientes de nuestra lista de espera y la obtiene quien responda primero.\n\n"
            "Responda Y a nuestro mensaje de texto para tomarla, o véala aquí: "
            "{{ secure_link }}",
            "Hay una cita disponible más pronto, " + _CUANDO + ".",
        ),
    },
    MessageKind.WAITLIST_CLOSED: {
        "en": (
            "{{ practice_name }}: the " + _WHEN + " opening is no longer available. "
            "You are still on our waitlist. Details: {{ secure_link }} "
            "Reply STOP to opt out, HELP for help.",
            "Appointment time no longer available - {{ practice_name }}",
            "The time we offered, " + _WHEN + ", is no longer available.\n\n"
            "You are still on our waitlist: we will let you know when another time opens up. "
            "Your appointments: {{ secure_link }}",
            "The time we offered, " + _WHEN + ", is no longer available.",
        ),
        "es": (
            "{{ practice_name }}: la cita " + _CUANDO + " ya no está disponible. "
            "Sigue en nuestra lista de espera. Detalles: {{ secure_link }} "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Cita ya no disponible - {{ practice_name }}",
            "La cita que le ofrecimos, " + _CUANDO + ", ya no está disponible.\n\n"
            "Sigue en nuestra lista de espera: le avisaremos cuando haya otra. "
            "Sus citas: {{ secure_link }}",
            "La cita que le ofrecimos, " + _CUANDO + ", ya no está disponible.",
        ),
    },
    # Says only that a referral waits: never from whom, to whom, or what for. The link
    # page offers a call back; booking itself is a phone call with the practice.
    MessageKind.REFERRAL_CONTACT: {
        "en": (
            "{{ practice_name }}: a referral for you is ready to be booked. Call us, "
            "or ask us to call you: {{ secure_link }} "
            "Reply STOP to opt out, HELP for help.",
            "Your referral is ready to be booked - {{ practice_name }}",
            "A referral for you is ready to be booked.\n\n"
            "Call us to choose a time, or ask us to call you here: {{ secure_link }}",
            "A referral for you is ready to be booked.",
        ),
        "es": (
            "{{ practice_name }}: tiene una referencia lista para programar. Llámenos "
            "o pida que le llamemos: {{ secure_link }} "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Su referencia está lista para programar - {{ practice_name }}",
            "Tiene una referencia lista para programar una cita.\n\n"
            "Llámenos para elegir la hora, o pida que le llamemos aquí: {{ secure_link }}",
            "Tiene una referencia lista para programar una cita.",
        ),
    },
    # Care-gap outreach: only that a check-up is due, never which measure, test or
    # condition, so a shared phone or inbox learns nothing about the patient's health.
    # The practice name leads, as in every text: for a sensitive location it is the
    # neutral sender, which is why the sentence never reads "a check-up at <name>".
    # Booking is a phone call: the link page says so and offers no call back yet.
    MessageKind.CHECKUP: {
        "en": (
            "{{ practice_name }}: it's time for a check-up. Call us to book a visit; "
            "details: {{ secure_link }} "
            "Reply STOP to opt out, HELP for help.",
            "Time for a check-up - {{ practice_name }}",
            "It's time for a check-up.\n\n"
            "Call us to choose a time for your visit. Details: {{ secure_link }}",
            "It's time for a check-up. Call us to choose a time for your visit.",
        ),
        "es": (
            "{{ practice_name }}: es momento de su chequeo. Llámenos para programar una "
            "cita; detalles: {{ secure_link }} "
            "Responda STOP para no recibir mensajes, HELP para ayuda.",
            "Es momento de su chequeo - {{ practice_name }}",
            "Es momento de su chequeo.\n\n"
            "Llámenos para elegir la hora de su cita. Detalles: {{ secure_link }}",
            "Es momento de su chequeo. Llámenos para elegir la hora de su cita.",
        ),
    },
}

_LINK_TEXT = {"en": "Open your appointment", "es": "Abrir su cita"}
_LINK_TEXT_OF_KIND = {
    MessageKind.REFERRAL_CONTACT: {"en": "Book your visit", "es": "Programar su cita"},
    MessageKind.CHECKUP: {"en": "How to book your check-up", "es": "Cómo programar su chequeo"},
}


def _built_ins() -> dict[TemplateKey, MessageTemplate]:
    templates: dict[TemplateKey, MessageTemplate] = {}
    for kind, languages in _TEXT.items():
        for language, (sms, subject, text, html_intro) in languages.items():
            sms_key = TemplateKey(kind, Channel.SMS, language)
            templates[sms_key] = MessageTemplate(key=sms_key, body=sms)
            email_key = TemplateKey(kind, Channel.EMAIL, language)
            link_text = _LINK_TEXT_OF_KIND.get(kind, _LINK_TEXT)[language]
            html = (
                f"<p>{html_intro}</p>\n"
                f'<p><a href="{{{{ secure_link }}}}">{link_text}</a></p>\n'
                "<p>{{ practice_name }}</p>"
            )
            templates[email_key] = MessageTemplate(
                key=email_key,
                subject=subject,
                body=text + "\n\n{{ practice_name }}",
                html_body=html,
            )
            portal_key = TemplateKey(kind, Channel.PORTAL, language)
            templates[portal_key] = MessageTemplate(key=portal_key, subject=subject, body=text)
    return templates


BUILT_IN_TEMPLATES: dict[TemplateKey, MessageTemplate] = _built_ins()
