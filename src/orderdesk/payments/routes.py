"""Payment submission. (Placeholder until the payments work lands.)"""

from fastapi import APIRouter

router = APIRouter()
